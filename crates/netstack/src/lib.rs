//! kubelan's TUN device and userspace TCP/IP stack (work in progress).
