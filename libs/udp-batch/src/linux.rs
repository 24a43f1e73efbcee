//! `recvmmsg`/`sendmmsg`. The only unsafe code of the crate: the calls themselves, and the
//! conversions between `SocketAddr` and the kernel's `sockaddr_storage`.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use crate::{MAX_BATCH, Receiver, Sender};

pub(crate) fn recv(receiver: &mut Receiver) -> io::Result<()> {
    let rx = &mut receiver.slots;
    let batch = rx.batch;
    let size = rx.size;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut storage: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut iovecs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let slots = rx.buffers.chunks_exact_mut(size);
    for (((slot, iov), hdr), name) in slots
        .zip(iovecs.iter_mut())
        .zip(headers.iter_mut())
        .zip(storage.iter_mut())
        .take(batch)
    {
        *iov = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: size,
        };
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    let n = loop {
        // SAFETY: `headers[..batch]` point at live buffers, iovecs and address storage that
        // outlive the call; the kernel writes at most `iov_len` bytes and `msg_namelen` bytes.
        let n = unsafe {
            libc::recvmmsg(
                rx.socket.as_raw_fd(),
                headers.as_mut_ptr(),
                batch as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            // An ICMP error about an earlier send is reported on the next receive; it says
            // nothing about what is waiting, so read again.
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused => continue,
            _ => return Err(e),
        }
    };
    for (hdr, name) in headers.iter().zip(storage.iter()).take(n) {
        // An address of another family cannot come from a UDP socket; were it to, the
        // datagram is kept empty (to be refused as too short) so that slots stay in line.
        let addr = to_socket_addr(name);
        let len = if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            receiver.truncated += 1;
            0
        } else if addr.is_none() {
            0
        } else {
            hdr.msg_len as usize
        };
        rx.lens.push(len);
        rx.addrs
            .push(addr.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))));
    }
    Ok(())
}

pub(crate) fn send(sender: &mut Sender) {
    let tx = &mut sender.slots;
    let count = tx.lens.len();
    let size = tx.size;
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut storage: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut iovecs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let slots = tx.buffers.chunks_exact_mut(size);
    for (i, (((slot, iov), hdr), name)) in slots
        .zip(iovecs.iter_mut())
        .zip(headers.iter_mut())
        .zip(storage.iter_mut())
        .take(count)
        .enumerate()
    {
        *iov = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: tx.lens[i],
        };
        hdr.msg_hdr.msg_namelen = from_socket_addr(tx.addrs[i], name);
        hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    let mut at = 0;
    while at < count {
        // SAFETY: `headers[at..count]` point at live buffers, iovecs and addresses.
        let n = unsafe {
            libc::sendmmsg(
                tx.socket.as_raw_fd(),
                headers[at..].as_mut_ptr(),
                (count - at) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            sender.sent += n as u64;
            at += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // The datagram at `at` was refused (or the call sent nothing): drop it, go on.
        sender.failures.count += 1;
        sender.failures.last = Some(if n < 0 {
            e
        } else {
            io::Error::other("sendmmsg sent nothing")
        });
        at += 1;
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it is large
            // and aligned enough for.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_socket_addr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is large and aligned enough for a `sockaddr_in`.
            let out: &mut libc::sockaddr_in =
                unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let out: &mut libc::sockaddr_in6 =
                unsafe { &mut *(storage as *mut libc::sockaddr_storage).cast() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
