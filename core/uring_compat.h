/*
 * uring_compat.h - what liburing 2.3 (Debian 12) lacks and this project uses.
 *
 * The kernel has had these for a while; only the library helpers came later
 * (2.4). meson defines HAVE_IO_URING_SETUP_BUF_RING when the installed
 * liburing has its own.
 */
#ifndef MXRING_URING_COMPAT_H
#define MXRING_URING_COMPAT_H

#include <errno.h>
#include <sys/mman.h>
#include <liburing.h>

#include <sys/syscall.h>
#include <unistd.h>

/* liburing 2.3 declares io_uring_enable_rings but its library does not export it. */
static inline int compat_enable_rings(struct io_uring *ring)
{
	long rc =
	    syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	return rc < 0 ? -errno : 0;
}

/* The same for io_uring_register_restrictions. */
static inline int compat_register_restrictions(struct io_uring *ring,
					       struct io_uring_restriction *res, unsigned n)
{
	long rc =
	    syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_RESTRICTIONS, res, n);
	return rc < 0 ? -errno : 0;
}

#ifndef HAVE_IO_URING_SETUP_BUF_RING
/* Maps and registers a provided-buffer ring of nentries (a power of two). */
static inline struct io_uring_buf_ring *io_uring_setup_buf_ring(struct io_uring *ring,
								unsigned int nentries, int bgid,
								unsigned int flags, int *ret)
{
	size_t len = (size_t)nentries * sizeof(struct io_uring_buf);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (p == MAP_FAILED) {
		*ret = -errno;
		return NULL;
	}
	struct io_uring_buf_reg reg = {
	    .ring_addr = (unsigned long)p,
	    .ring_entries = nentries,
	    .bgid = (__u16)bgid,
	};
	(void)flags; /* reg.pad is what newer kernels call flags; none are used here */
	struct io_uring_buf_ring *br = p;
	io_uring_buf_ring_init(br);
	int rc = io_uring_register_buf_ring(ring, &reg, 0);
	if (rc) {
		munmap(p, len);
		*ret = rc;
		return NULL;
	}
	*ret = 0;
	return br;
}

static inline int io_uring_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br,
					 unsigned int nentries, int bgid)
{
	int rc = io_uring_unregister_buf_ring(ring, bgid);
	munmap(br, (size_t)nentries * sizeof(struct io_uring_buf));
	return rc;
}
#endif

#endif
