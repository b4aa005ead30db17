//! Numbered UDP streams between pods, to see exactly which packets passed while the
//! maps were being changed: a sender paces sequence numbers to several ports at once,
//! and a receiver per port records every number that arrived.
//!
//! UDP, not TCP: a TCP loss is hidden by retransmission, and the question is whether the
//! datapath dropped a single packet. Every loop is bounded by the stream's duration.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{Pod, in_netns};

/// Time between two rounds of packets (one packet per port per round).
const PACE: Duration = Duration::from_micros(500);
/// How long a receiver waits after the sender stopped before it stops too.
const DRAIN: Duration = Duration::from_millis(300);

/// Streams from one pod to ports of another, running until [`Streams::finish`].
#[derive(Debug)]
pub struct Streams {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<u32>,
    receivers: Vec<(u16, JoinHandle<Vec<u32>>)>,
}

/// What arrived on one port.
#[derive(Debug)]
pub struct Received {
    pub port: u16,
    /// How many numbers were sent (0 to sent - 1), the same for every port.
    pub sent: u32,
    /// The numbers that arrived, in arrival order.
    pub numbers: Vec<u32>,
}

impl Received {
    /// Runs of consecutive numbers that arrived, as (first, last).
    pub fn runs(&self) -> Vec<(u32, u32)> {
        let mut sorted = self.numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for n in sorted {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == n => *last = n,
                _ => runs.push((n, n)),
            }
        }
        runs
    }
}

impl Streams {
    /// Starts receivers on `ports` of `to` and a sender from `from` to all of them.
    pub fn start(from: &Pod, to: &Pod, ports: &[u16]) -> Streams {
        let stop = Arc::new(AtomicBool::new(false));
        let receivers = ports
            .iter()
            .map(|&port| {
                let bind = SocketAddr::from((Ipv4Addr::from(to.ip), port));
                let socket = in_netns(&to.netns, move || UdpSocket::bind(bind))
                    .unwrap_or_else(|e| panic!("binding {bind}: {e}"));
                socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
                enlarge_receive_buffer(&socket);
                let stop = Arc::clone(&stop);
                (port, thread::spawn(move || receive(&socket, &stop)))
            })
            .collect();

        let local = SocketAddr::from((Ipv4Addr::from(from.ip), 0));
        let socket = in_netns(&from.netns, move || UdpSocket::bind(local))
            .unwrap_or_else(|e| panic!("binding {local}: {e}"));
        let targets: Vec<SocketAddr> =
            ports.iter().map(|&p| SocketAddr::from((Ipv4Addr::from(to.ip), p))).collect();
        let sender = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || send(&socket, &targets, &stop))
        };
        Streams { stop, sender, receivers }
    }

    /// Stops the sender, lets the last packets arrive, and returns what each port got.
    pub fn finish(self) -> Vec<Received> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.sender.join().expect("the sender panicked");
        self.receivers
            .into_iter()
            .map(|(port, receiver)| Received {
                port,
                sent,
                numbers: receiver.join().expect("a receiver panicked"),
            })
            .collect()
    }
}

/// Bytes of receive buffer per stream: several seconds of the stream, so a receiver
/// thread starved of CPU on a busy machine loses nothing in its socket, and every loss
/// the test sees is the datapath's.
const RECEIVE_BUFFER: libc::c_int = 64 << 20;

fn enlarge_receive_buffer(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = RECEIVE_BUFFER;
    // SAFETY: a valid socket and a c_int option value of the size passed. SO_RCVBUFFORCE
    // (root only, as the kernel tests are) goes past net.core.rmem_max.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Sends rounds of numbered datagrams until stopped; returns how many rounds were sent.
fn send(socket: &UdpSocket, targets: &[SocketAddr], stop: &AtomicBool) -> u32 {
    let mut next = Instant::now();
    let mut n = 0u32;
    while !stop.load(Ordering::SeqCst) {
        for target in targets {
            // A send that fails (a full socket buffer) is a packet not sent, not one the
            // datapath dropped: send it again rather than count it lost.
            while socket.send_to(&n.to_be_bytes(), target).is_err() {
                thread::sleep(Duration::from_micros(50));
            }
        }
        n += 1;
        next += PACE;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    n
}

/// Records numbers until stopped and quiet for [`DRAIN`].
fn receive(socket: &UdpSocket, stop: &AtomicBool) -> Vec<u32> {
    let mut numbers = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    let mut buf = [0u8; 16];
    loop {
        if let Ok((4, _)) = socket.recv_from(&mut buf) {
            numbers.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        }
        if stop.load(Ordering::SeqCst) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN {
                return numbers;
            }
        }
    }
}
