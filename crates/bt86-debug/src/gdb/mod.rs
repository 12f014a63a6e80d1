//! The gdb remote stub: `bt86 run --gdb [HOST:PORT]`, `-s` and `-S`.
//!
//! This module owns the conversation with a gdb client over TCP, built on
//! the `gdbstub` crate's blocking event loop with `gdbstub_arch`'s i386
//! target description (`X86_SSE`). It turns gdb's requests into calls of
//! the monitor's run-control API (`Vm::step`, `Vm::resume`, breakpoints,
//! watchpoints, `Vm::read_linear`/`write_linear`) and the monitor's stops
//! back into gdb stop replies; its `monitor` commands print the same text
//! as the scripted debugger through [`crate::inspect`]. It must not reach
//! into the translation cache or the world switch: everything it knows
//! about the guest comes through `Vm`'s public run control and the virtual
//! CPU's state, so gdb sees guest EIPs and guest selectors only, never a
//! translation-cache address or a shadow segment.
//!
//! What happens when the session ends is part of bt86's interface, and the
//! `run --help` text and Lab 4 of the book say the same:
//! - the guest exits (isa-debug-exit, power-off, a triple fault, a `hlt`
//!   nothing can wake): gdb gets an exit reply (`W`) carrying bt86's own
//!   exit status, and bt86 exits with that status;
//! - gdb detaches (`detach`, or `quit` after `detach`): the breakpoints
//!   and watchpoints are dropped and the guest runs on to its end, as it
//!   does under QEMU;
//! - gdb kills the guest (`kill`): bt86 exits with status
//!   [`STATUS_KILLED`];
//! - the connection is lost without a detach (gdb crashed or was killed,
//!   the network went away): bt86 stops the guest where it is, says so, and
//!   exits with status [`STATUS_DISCONNECTED`]. It does not wait for a new
//!   client: a teaching session that lost its debugger should end loudly,
//!   not go on unobserved.

mod monitor;
mod regs;
mod target;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bt86_native::{Exit, NativeError, RunLimit, Stop, Vm};
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::{DisconnectReason, GdbStub};

pub use target::GdbTarget;

/// Where `-s` (and `--gdb` without a value) listens: QEMU's default.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:1234";

/// bt86's exit status when the gdb client's connection was lost without a
/// detach. bt86's own statuses are even, the guest's odd (see `bt86 run
/// --help`).
pub const STATUS_DISCONNECTED: i32 = 10;

/// bt86's exit status when gdb killed the guest (`kill`).
pub const STATUS_KILLED: i32 = 12;

/// How long the guest runs between two looks at the socket while gdb
/// waits for it (after `continue`) or before gdb has connected (without
/// `-S`). Short enough that Ctrl-C in gdb feels immediate, long enough that
/// the guest spends its time running rather than polling.
const SLICE: Duration = Duration::from_millis(5);

/// How the stub was asked to run.
#[derive(Clone, Copy, Debug)]
pub struct GdbOptions {
    /// `-S`: hold the guest before its first instruction until gdb
    /// connects. Without it, the guest runs while bt86 waits, and stops
    /// wherever it is when gdb connects, as under QEMU's `-s`.
    pub wait_for_client: bool,
    /// bt86's exit status for a way the guest stopped, reported to gdb in
    /// the exit reply so that gdb prints the number the shell will see.
    pub exit_status: fn(&Exit) -> i32,
}

/// How a gdb session ended.
#[derive(Debug)]
pub enum GdbOutcome {
    /// The guest stopped for good (before gdb connected, or while it was
    /// attached). The caller reports it as for a run without gdb.
    Exited(Exit),
    /// gdb detached: the caller lets the guest run on to its end.
    Detached,
    /// gdb killed the guest at `eip`.
    Killed { eip: u32 },
    /// The connection was lost without a detach, with the guest stopped at
    /// `eip`.
    Disconnected { eip: u32, reason: String },
}

impl GdbOutcome {
    /// The exit status bt86 ends with for a session that ended without
    /// the guest exiting, or `None` when the guest's own exit (or its
    /// further run, after a detach) decides it.
    pub fn status(&self) -> Option<i32> {
        match self {
            GdbOutcome::Killed { .. } => Some(STATUS_KILLED),
            GdbOutcome::Disconnected { .. } => Some(STATUS_DISCONNECTED),
            GdbOutcome::Exited(_) | GdbOutcome::Detached => None,
        }
    }
}

impl fmt::Display for GdbOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbOutcome::Exited(exit) => write!(f, "the guest stopped while gdb was attached: {exit:?}"),
            GdbOutcome::Detached => write!(f, "gdb detached; the guest runs on to its end"),
            GdbOutcome::Killed { eip } => write!(
                f,
                "gdb killed the guest at EIP {eip:#010x} (exit status {STATUS_KILLED})"
            ),
            GdbOutcome::Disconnected { eip, reason } => write!(
                f,
                "the gdb client went away without detaching ({reason}); the guest was stopped at EIP {eip:#010x} \
                 and bt86 ends (exit status {STATUS_DISCONNECTED}); use `detach` in gdb to let the guest run on"
            ),
        }
    }
}

/// Host failures of the gdb stub. Guest faults never show up here: a bad
/// guest address read by gdb is an error reply to gdb, not a bt86 error.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("--gdb {text:?}: {reason}; give HOST:PORT, e.g. --gdb 127.0.0.1:1234 (port 0 picks a free port), or -s for 127.0.0.1:1234")]
    Address { text: String, reason: String },
    #[error("cannot listen for gdb on {addr}: {source}; choose a free port with --gdb HOST:PORT (port 0 picks one)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("waiting for gdb to connect on {addr} failed: {source}")]
    Accept { addr: SocketAddr, source: io::Error },
    #[error("the monitor failed while serving gdb: {0}")]
    Monitor(#[from] NativeError),
    #[error("the gdb session failed: {0}; this is a bug in bt86's stub or a client speaking another protocol")]
    Protocol(String),
}

/// Parses the argument of `--gdb`: `HOST:PORT`, `:PORT` or `PORT` (on
/// 127.0.0.1), also in QEMU's `tcp:HOST:PORT` spelling. Host names are
/// resolved; the first address wins.
pub fn parse_address(text: &str) -> Result<SocketAddr, GdbError> {
    let err = |reason: &str| GdbError::Address { text: text.to_string(), reason: reason.to_string() };
    let spec = text.strip_prefix("tcp:").unwrap_or(text);
    if spec.is_empty() {
        return Err(err("the address is empty"));
    }
    // A bare port number, or ":PORT", means loopback, QEMU's and bt86's
    // default: a stub on every interface would give anyone on the network
    // the guest's memory.
    let spec = if spec.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{spec}")
    } else if let Some(port) = spec.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        spec.to_string()
    };
    let Some((_, port)) = spec.rsplit_once(':') else {
        return Err(err("there is no :PORT"));
    };
    if port.parse::<u16>().is_err() {
        return Err(err("the port is not a number from 0 to 65535"));
    }
    match spec.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| err("the host name has no address")),
        Err(e) => Err(err(&format!("cannot resolve the host ({e})"))),
    }
}

/// Opens the socket gdb will connect to. Binding early, before the guest
/// is built, lets a port that is already taken fail as bad input.
pub fn listen(addr: SocketAddr) -> Result<TcpListener, GdbError> {
    TcpListener::bind(addr).map_err(|source| GdbError::Bind { addr, source })
}

/// Serves one gdb client on `listener` for `vm`, then says how the session
/// ended. Prints where it listens on standard error first (with the real
/// port when port 0 was asked for), so that a script can connect.
pub fn serve(vm: &mut Vm, listener: TcpListener, options: &GdbOptions) -> Result<GdbOutcome, GdbError> {
    let addr = listener.local_addr().map_err(|source| GdbError::Accept { addr: unspecified(), source })?;
    eprintln!(
        "bt86: waiting for gdb on {addr} (in gdb: target remote {addr}){}",
        if options.wait_for_client { "; the guest starts when gdb continues" } else { "; the guest runs meanwhile" }
    );
    let stream = if options.wait_for_client {
        listener.accept().map(|(s, _)| s).map_err(|source| GdbError::Accept { addr, source })?
    } else {
        match run_until_client(vm, &listener, addr)? {
            Ok(stream) => stream,
            Err(exit) => return Ok(GdbOutcome::Exited(exit)),
        }
    };
    drop(listener);
    if let Ok(peer) = stream.peer_addr() {
        eprintln!("bt86: gdb connected from {peer}; the guest is stopped at EIP {:#010x}", vm.cpu.eip);
    }
    let mut target = GdbTarget::new(vm, options.exit_status);
    let stub = GdbStub::new(stream);
    let result = stub.run_blocking::<target::EventLoop<'_>>(&mut target);
    let exit = target.take_exit();
    let eip = target.vm().cpu.eip;
    match result {
        Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => match exit {
            Some(exit) => Ok(GdbOutcome::Exited(exit)),
            None => Err(GdbError::Protocol("the stub reported an exit the guest did not make".to_string())),
        },
        Ok(DisconnectReason::Disconnect) => {
            target.forget_all();
            Ok(GdbOutcome::Detached)
        }
        Ok(DisconnectReason::Kill) => Ok(GdbOutcome::Killed { eip }),
        Err(e) if e.is_target_error() => match e.into_target_error() {
            Some(e) => Err(GdbError::Monitor(e)),
            None => Err(GdbError::Protocol("a target error without its cause".to_string())),
        },
        Err(e) if e.is_connection_error() => {
            let reason = match e.into_connection_error() {
                Some((e, _)) if e.kind() == io::ErrorKind::UnexpectedEof => "the connection was closed".to_string(),
                Some((e, kind)) => format!("{kind:?} error on the connection: {e}"),
                None => "the connection failed".to_string(),
            };
            Ok(GdbOutcome::Disconnected { eip, reason })
        }
        Err(e) => Err(GdbError::Protocol(e.to_string())),
    }
}

/// Without `-S`: runs the guest in short slices, looking for a client
/// between them. Returns the client's connection, with the guest stopped
/// at an instruction boundary, or the guest's exit if it ended first.
fn run_until_client(vm: &mut Vm, listener: &TcpListener, addr: SocketAddr) -> Result<Result<TcpStream, Exit>, GdbError> {
    listener.set_nonblocking(true).map_err(|source| GdbError::Accept { addr, source })?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // The stub does its own blocking and non-blocking reads.
                stream.set_nonblocking(false).map_err(|source| GdbError::Accept { addr, source })?;
                return Ok(Ok(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(source) => return Err(GdbError::Accept { addr, source }),
        }
        match vm.resume(slice())? {
            Stop::Exit(exit) => return Ok(Err(exit)),
            // No breakpoint or watchpoint exists before gdb connects, and
            // events are not asked for: only the slice's end stops here.
            _ => continue,
        }
    }
}

/// The run limit of one slice of a `continue`.
fn slice() -> RunLimit {
    RunLimit { max_insns: None, until: Some(Instant::now() + SLICE), stop_on_events: false }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Whether a byte is waiting on the connection (the client sent Ctrl-C or
/// a packet while the guest runs). A failed look counts as "yes", so that
/// the read that follows reports the failure.
fn client_has_data(conn: &mut TcpStream) -> bool {
    ConnectionExt::peek(conn).map(|b| b.is_some()).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling `--gdb` accepts, and the address it means.
    #[test]
    fn addresses_parse_as_documented() {
        let cases = [
            ("127.0.0.1:1234", "127.0.0.1:1234"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            (":4321", "127.0.0.1:4321"),
            ("4321", "127.0.0.1:4321"),
            ("tcp::1234", "127.0.0.1:1234"),
            ("tcp:127.0.0.1:99", "127.0.0.1:99"),
            ("0.0.0.0:1234", "0.0.0.0:1234"),
            ("[::1]:1234", "[::1]:1234"),
        ];
        for (text, expected) in cases {
            let addr = parse_address(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(addr.to_string(), expected, "--gdb {text}");
        }
    }

    /// Bad addresses are one-line errors that name the input.
    #[test]
    fn bad_addresses_are_refused_with_the_input_named() {
        for text in ["", "tcp:", "localhost", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:http", "guest.elf"] {
            let err = parse_address(text).expect_err(text).to_string();
            assert!(err.contains(&format!("{text:?}")), "{text}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    /// Each way a session can end without the guest exiting has its own
    /// documented status; the others leave it to the guest.
    #[test]
    fn outcomes_have_their_documented_statuses() {
        let cases = [
            (GdbOutcome::Killed { eip: 0x100000 }, Some(STATUS_KILLED)),
            (GdbOutcome::Disconnected { eip: 0x100000, reason: "closed".into() }, Some(STATUS_DISCONNECTED)),
            (GdbOutcome::Detached, None),
            (GdbOutcome::Exited(Exit::GuestExit(33)), None),
        ];
        for (outcome, status) in cases {
            assert_eq!(outcome.status(), status, "{outcome}");
            if let Some(s) = status {
                assert!(outcome.to_string().contains(&format!("exit status {s}")), "{outcome}");
                assert!(outcome.to_string().contains("0x00100000"), "{outcome}");
            }
        }
        // bt86's own statuses are even, so they never collide with a
        // guest's isa-debug-exit status, which is always odd.
        assert_eq!(STATUS_DISCONNECTED % 2, 0);
        assert_eq!(STATUS_KILLED % 2, 0);
    }
}
