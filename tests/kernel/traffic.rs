//! Traffic between pods, in Rust except for ICMP (ping). Every wait is bounded.
//!
//! A flow counts as passing only when bytes went both ways: the request reached the
//! server and the answer came back, so the reply path is checked too.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use super::{Pod, in_netns, run};

/// How long an expected-blocked attempt waits before calling the flow blocked.
pub const BLOCKED_WAIT: Duration = Duration::from_secs(1);
/// How long an expected-passing attempt may take.
const PASS_WAIT: Duration = Duration::from_secs(5);
/// Attempts for an expected-passing flow (a fresh veth may drop the very first frame).
const PASS_ATTEMPTS: usize = 3;

const REQUEST: &[u8] = b"policyc?";
const ANSWER: &[u8] = b"policyc!";

/// The protocols the test speaks.
#[derive(Clone, Copy, Debug)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

/// Whether `probe` from `from` to `to` passes, trying a few times when `expect_pass`.
/// The error says what failed, for the assertion message.
pub fn check(from: &Pod, to: &Pod, probe: Probe, expect_pass: bool) -> Result<(), String> {
    let attempts = if expect_pass { PASS_ATTEMPTS } else { 1 };
    let wait = if expect_pass { PASS_WAIT } else { BLOCKED_WAIT };
    let mut last = Err(String::from("not tried"));
    for _ in 0..attempts {
        last = match probe {
            Probe::Tcp(port) => tcp(from, to, port, wait),
            Probe::Udp(port) => udp(from, to, port, wait),
            Probe::Ping => ping(from, to, wait),
        };
        if last.is_ok() {
            break;
        }
    }
    last
}

fn addr(pod: &Pod, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(pod.ip), port))
}

/// A TCP connection from `from` to a listener on `to`, with one exchange each way.
fn tcp(from: &Pod, to: &Pod, port: u16, wait: Duration) -> Result<(), String> {
    let bind = addr(to, port);
    let listener = in_netns(&to.netns, move || TcpListener::bind(bind))
        .map_err(|e| format!("listening on {bind}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server = thread::spawn(move || serve_tcp_once(&listener, wait));

    let target = addr(to, port);
    let client = in_netns(&from.netns, move || TcpStream::connect_timeout(&target, wait))
        .map_err(|e| format!("connecting to {target}: {e}"))
        .and_then(|mut stream| {
            stream.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
            stream.write_all(REQUEST).map_err(|e| format!("sending: {e}"))?;
            let mut answer = [0u8; ANSWER.len()];
            stream.read_exact(&mut answer).map_err(|e| format!("no answer: {e}"))?;
            if answer == ANSWER { Ok(()) } else { Err(format!("wrong answer {answer:?}")) }
        });
    let served = server.join().expect("the TCP server thread panicked");
    client.and(served)
}

/// Accepts one connection until `wait` has passed, reads the request and answers.
fn serve_tcp_once(listener: &TcpListener, wait: Duration) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("server accepted nothing: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let mut request = [0u8; REQUEST.len()];
    stream.read_exact(&mut request).map_err(|e| format!("server got no request: {e}"))?;
    stream.write_all(ANSWER).map_err(|e| format!("server could not answer: {e}"))
}

/// A UDP datagram from `from` to an echo server on `to`, and the echo back.
fn udp(from: &Pod, to: &Pod, port: u16, wait: Duration) -> Result<(), String> {
    let bind = addr(to, port);
    let server = in_netns(&to.netns, move || UdpSocket::bind(bind))
        .map_err(|e| format!("binding {bind}: {e}"))?;
    server.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (len, peer) =
            server.recv_from(&mut buf).map_err(|e| format!("echo got nothing: {e}"))?;
        server.send_to(&buf[..len], peer).map_err(|e| format!("echo could not answer: {e}"))?;
        Ok::<(), String>(())
    });

    let local = addr(from, 0);
    let client = in_netns(&from.netns, move || UdpSocket::bind(local))
        .map_err(|e| format!("binding {local}: {e}"))?;
    client.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let sent = client.send_to(REQUEST, addr(to, port)).map_err(|e| format!("sending: {e}"));
    let mut buf = [0u8; 64];
    let received = sent.and_then(|_| {
        let (len, _) = client.recv_from(&mut buf).map_err(|e| format!("no echo: {e}"))?;
        if &buf[..len] == REQUEST { Ok(()) } else { Err(format!("wrong echo {:?}", &buf[..len])) }
    });
    let echoed = echo.join().expect("the UDP echo thread panicked");
    received.and(echoed)
}

/// One ICMP echo request from `from` to `to`, waiting at most `wait` for the reply.
fn ping(from: &Pod, to: &Pod, wait: Duration) -> Result<(), String> {
    let target = Ipv4Addr::from(to.ip).to_string();
    let out = run(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", from.netns))
        .args(["ping", "-n", "-c", "1", "-W"])
        .arg(wait.as_secs().max(1).to_string())
        .arg(&target));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ping {target} got no reply: {}", String::from_utf8_lossy(&out.stdout).trim()))
    }
}
