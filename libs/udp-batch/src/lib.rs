//! Many UDP datagrams per system call: a [`Receiver`] reads up to a batch of waiting datagrams
//! with one `recvmmsg`, a [`Sender`] queues datagrams and sends them with one `sendmmsg`.
//! Elsewhere than Linux both fall back to one `recv_from`/`send_to` per datagram, with the same
//! behaviour; the `portable` feature takes that path on Linux too (its tests run there:
//! `cargo test -p udp-batch --features portable`).
//!
//! On loopback a datagram's system call costs several microseconds, most of it fixed per call;
//! a server that answers hundreds of clients per tick pays that once per batch instead.
//!
//! Both work on non-blocking sockets: a receive returns what is waiting (possibly nothing),
//! and a datagram the kernel will not take now (a full send buffer, an ICMP error from a peer
//! that went away) is dropped and counted, as UDP would lose it anyway.

#![cfg_attr(
    any(not(target_os = "linux"), feature = "portable"),
    forbid(unsafe_code)
)]

#[cfg(all(target_os = "linux", not(feature = "portable")))]
mod linux;

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Most datagrams one call moves.
pub const MAX_BATCH: usize = 64;

/// A non-blocking socket with room for a batch of datagrams: slot `i` is
/// `buffers[i * size..][..size]`, with its length and peer address in `lens[i]`, `addrs[i]`.
struct Slots {
    socket: UdpSocket,
    size: usize,
    batch: usize,
    buffers: Box<[u8]>,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
}

impl Slots {
    fn new(socket: UdpSocket, batch: usize, size: usize) -> io::Result<Self> {
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram buffers of 0 bytes",
            ));
        }
        socket.set_nonblocking(true)?;
        let batch = batch.clamp(1, MAX_BATCH);
        Ok(Self {
            socket,
            size,
            batch,
            buffers: vec![0; batch * size].into_boxed_slice(),
            lens: Vec::with_capacity(batch),
            addrs: Vec::with_capacity(batch),
        })
    }

    fn clear(&mut self) {
        self.lens.clear();
        self.addrs.clear();
    }
}

/// Reads datagrams in batches from a non-blocking socket.
pub struct Receiver {
    slots: Slots,
    truncated: u64,
    /// One datagram and a byte more: the portable path reads here first, so a datagram longer
    /// than the slots is seen as such (`recv_from` truncates silently on Unix).
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    spare: Box<[u8]>,
}

impl Receiver {
    /// Reads from `socket` (set non-blocking here), up to `batch` datagrams (at most
    /// [`MAX_BATCH`]) of up to `size` bytes per call; a longer datagram is dropped.
    pub fn new(socket: UdpSocket, batch: usize, size: usize) -> io::Result<Self> {
        Ok(Self {
            slots: Slots::new(socket, batch, size)?,
            truncated: 0,
            #[cfg(any(not(target_os = "linux"), feature = "portable"))]
            spare: vec![0; size + 1].into_boxed_slice(),
        })
    }

    /// Reads what is waiting, up to one batch; returns how many datagrams were read (0 when
    /// none was waiting). Read them with [`Self::datagram`] before the next call.
    pub fn recv(&mut self) -> io::Result<usize> {
        self.slots.clear();
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        let result = linux::recv(self);
        #[cfg(any(not(target_os = "linux"), feature = "portable"))]
        let result = self.recv_each();
        match result {
            Ok(()) => Ok(self.slots.lens.len()),
            Err(e) if would_block(&e) => Ok(self.slots.lens.len()),
            Err(e) => Err(e),
        }
    }

    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    fn recv_each(&mut self) -> io::Result<()> {
        let s = &mut self.slots;
        while s.lens.len() < s.batch {
            let (len, addr) = match s.socket.recv_from(&mut self.spare) {
                Ok(got) => got,
                // An ICMP error about an earlier send: nothing to read from it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                // Windows reports a datagram longer than the buffer (WSAEMSGSIZE) as an error;
                // the datagram is consumed, but not its sender.
                #[cfg(windows)]
                Err(e) if e.raw_os_error() == Some(10040) => {
                    self.truncated += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let i = s.lens.len();
            if len > s.size {
                self.truncated += 1;
                s.lens.push(0);
            } else {
                s.buffers[i * s.size..i * s.size + len].copy_from_slice(&self.spare[..len]);
                s.lens.push(len);
            }
            s.addrs.push(addr);
        }
        Ok(())
    }

    /// The `i`th datagram of the last [`Self::recv`] and its sender; a datagram longer than
    /// the buffer comes back empty (refuse it as too short).
    pub fn datagram(&mut self, i: usize) -> (SocketAddr, &mut [u8]) {
        let s = &mut self.slots;
        let start = i * s.size;
        let len = s.lens[i];
        (s.addrs[i], &mut s.buffers[start..start + len])
    }

    /// Datagrams dropped so far because they were longer than the buffer.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }
}

/// What a [`Sender`] could not send since it was last asked.
#[derive(Debug, Default)]
pub struct SendFailures {
    pub count: u64,
    pub last: Option<io::Error>,
}

/// Queues datagrams and sends them in batches on a non-blocking socket.
pub struct Sender {
    slots: Slots,
    sent: u64,
    failures: SendFailures,
}

impl Sender {
    /// Sends on `socket` (set non-blocking here) in batches of up to `batch` datagrams (at most
    /// [`MAX_BATCH`]) of up to `size` bytes each.
    pub fn new(socket: UdpSocket, batch: usize, size: usize) -> io::Result<Self> {
        Ok(Self {
            slots: Slots::new(socket, batch, size)?,
            sent: 0,
            failures: SendFailures::default(),
        })
    }

    /// Queues one datagram to `addr`, written in place by `write` into a buffer of the
    /// sender's datagram size; `write` returns its length (0 queues nothing). A full batch is
    /// sent first.
    pub fn push_with<E>(
        &mut self,
        addr: SocketAddr,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<(), E> {
        if self.slots.lens.len() == self.slots.batch {
            self.flush();
        }
        let s = &mut self.slots;
        let i = s.lens.len();
        let buf = &mut s.buffers[i * s.size..(i + 1) * s.size];
        let len = write(buf)?;
        if len > 0 {
            s.lens.push(len.min(s.size));
            s.addrs.push(addr);
        }
        Ok(())
    }

    /// Queues a copy of `packet` (cut to the datagram size).
    pub fn push(&mut self, addr: SocketAddr, packet: &[u8]) {
        let _ = self.push_with::<()>(addr, |buf| {
            let len = packet.len().min(buf.len());
            buf[..len].copy_from_slice(&packet[..len]);
            Ok(len)
        });
    }

    /// Datagrams waiting to be sent.
    pub fn queued(&self) -> usize {
        self.slots.lens.len()
    }

    /// Sends everything queued. A datagram the kernel refuses is dropped and counted in
    /// [`Self::take_failures`]; the rest are still sent.
    pub fn flush(&mut self) {
        if self.slots.lens.is_empty() {
            return;
        }
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        linux::send(self);
        #[cfg(any(not(target_os = "linux"), feature = "portable"))]
        self.send_each();
        self.slots.clear();
    }

    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    fn send_each(&mut self) {
        for i in 0..self.slots.lens.len() {
            let s = &self.slots;
            let start = i * s.size;
            match s
                .socket
                .send_to(&s.buffers[start..start + s.lens[i]], s.addrs[i])
            {
                Ok(_) => self.sent += 1,
                Err(e) => self.fail(e),
            }
        }
    }

    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    fn fail(&mut self, e: io::Error) {
        self.failures.count += 1;
        self.failures.last = Some(e);
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The datagrams dropped since the last call, and the last error among them.
    pub fn take_failures(&mut self) -> SendFailures {
        std::mem::take(&mut self.failures)
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (a, b)
    }

    /// Reads until `want` datagrams arrived or a second passed.
    fn read_all(rx: &mut Receiver, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            let n = rx.recv().unwrap();
            for i in 0..n {
                let (addr, data) = rx.datagram(i);
                got.push((addr, data.to_vec()));
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn a_batch_arrives_whole_in_order_from_its_sender() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let from = a.local_addr().unwrap();
        let mut tx = Sender::new(a, 8, 1400).unwrap();
        let mut rx = Receiver::new(b, 8, 1400).unwrap();
        // 20 datagrams: more than one batch on each side.
        for i in 0..20u8 {
            tx.push(to, &vec![i; 1 + i as usize * 50]);
        }
        tx.flush();
        assert_eq!(tx.queued(), 0);
        assert_eq!(tx.sent(), 20);
        let got = read_all(&mut rx, 20);
        assert_eq!(got.len(), 20);
        for (i, (addr, data)) in got.iter().enumerate() {
            assert_eq!(*addr, from);
            assert_eq!(data.len(), 1 + i * 50);
            assert!(data.iter().all(|&x| x as usize == i));
        }
        assert_eq!(rx.recv().unwrap(), 0, "nothing more is waiting");
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_comes_back_empty() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut rx = Receiver::new(b, 4, 100).unwrap();
        a.send_to(&[1; 300], to).unwrap();
        a.send_to(&[2; 50], to).unwrap();
        let got = read_all(&mut rx, 2);
        assert_eq!(got.len(), 2);
        assert!(got[0].1.is_empty());
        assert_eq!(got[1].1, vec![2; 50]);
        assert_eq!(rx.truncated(), 1);
    }

    #[test]
    fn ipv6_addresses_round_trip() {
        let Ok(a) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let to = b.local_addr().unwrap();
        let from = a.local_addr().unwrap();
        let mut tx = Sender::new(a, 4, 1400).unwrap();
        let mut rx = Receiver::new(b, 4, 1400).unwrap();
        tx.push(to, b"six");
        tx.flush();
        let got = read_all(&mut rx, 1);
        assert_eq!(got, vec![(from, b"six".to_vec())]);
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_others_still_go() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut tx = Sender::new(a, 8, 1400).unwrap();
        let mut rx = Receiver::new(b, 8, 1400).unwrap();
        tx.push(to, b"first");
        // An IPv6 destination on an IPv4 socket: the kernel refuses this one datagram.
        tx.push("[::1]:9".parse().unwrap(), b"nowhere");
        tx.push(to, b"third");
        tx.flush();
        let failures = tx.take_failures();
        assert_eq!(failures.count, 1);
        assert!(failures.last.is_some());
        assert_eq!(tx.take_failures().count, 0, "taken");
        let got = read_all(&mut rx, 2);
        let data: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(data, vec![b"first".to_vec(), b"third".to_vec()]);
    }

    #[test]
    fn an_empty_socket_reads_nothing() {
        let (_a, b) = pair();
        let mut rx = Receiver::new(b, 8, 1400).unwrap();
        assert_eq!(rx.recv().unwrap(), 0);
    }
}
