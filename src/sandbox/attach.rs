//! The caller's side of `kiln run`: signals turned into a descriptor and passed on to the
//! init, the control socket read (with the terminal's master descriptor it may carry), and
//! for `-t` the pseudo-terminal relayed to the caller's standard streams with its size kept
//! in step and the caller's terminal in raw mode meanwhile.
//!
//! Consumes the control socket, the init's pid and the [`Attach`] options; produces the
//! init's [`Report`]. Must never leave the caller's terminal in raw mode or its signal mask
//! changed, and never print (the command's bytes go to standard output untouched).

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::init::forwarded_and;
use super::spec::{Attach, Message};
use super::{fdpass, Report, SandboxError};

/// The caller's forwarded signals and SIGWINCH, blocked in the calling thread and readable
/// from a signalfd(2) while held; the old mask comes back on drop.
pub(crate) struct Signals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl Signals {
    /// Blocks the signals and opens the descriptor that delivers them.
    pub(crate) fn block() -> io::Result<Signals> {
        let set = forwarded_and(libc::SIGWINCH);
        // SAFETY: a zeroed set we own for the old mask; signalfd returns a new descriptor
        // that is owned at once.
        unsafe {
            let mut old: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                let error = io::Error::last_os_error();
                libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return Err(error);
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
                old,
            })
        }
    }

    /// The next pending signal, if any.
    fn next(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        unsafe {
            let mut info: libc::signalfd_siginfo = std::mem::zeroed();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let read = libc::read(
                self.fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            );
            (read == size as isize).then_some(info.ssi_signo as i32)
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Consume what arrived too late to pass on, so unblocking does not deliver it here.
        while self.next().is_some() {}
        // SAFETY: restoring the mask saved in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// The caller's terminal in raw mode (termios(3) cfmakeraw), restored on drop: keys reach the
/// command's terminal as typed, and its line discipline, not the caller's, turns Ctrl-C into
/// SIGINT for the command.
struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    fn enter(fd: RawFd) -> io::Result<RawTerminal> {
        // SAFETY: termios is plain data filled by tcgetattr on a descriptor we were given.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RawTerminal { fd, saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty on any descriptor number is harmless.
    unsafe { libc::isatty(fd) == 1 }
}

/// The caller's terminal size, from stdin, else stdout; `None` when neither is a terminal.
pub(crate) fn caller_size() -> Option<libc::winsize> {
    [0, 1].into_iter().find_map(|fd| {
        // SAFETY: winsize is plain data that TIOCGWINSZ fills.
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            (libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) == 0).then_some(size)
        }
    })
}

/// Copies the caller's terminal size to the pseudo-terminal; the kernel then sends SIGWINCH
/// to the command's foreground group when it changed (tty_ioctl(4)).
fn copy_size(master: &OwnedFd) {
    if let Some(size) = caller_size() {
        set_size(master.as_raw_fd(), &size);
    }
}

/// TIOCSWINSZ on the terminal `fd`; a failure only leaves the size as it was.
pub(crate) fn set_size(fd: RawFd, size: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, size) };
}

/// One read(2) into `buffer`; `None` at end of file or when the other side is gone (a
/// pseudo-terminal master reads EIO once no slave is open, pty(7)).
fn read_some(fd: RawFd, buffer: &mut [u8]) -> Option<usize> {
    loop {
        // SAFETY: read into a live buffer of the given length.
        let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if read > 0 {
            return Some(read as usize);
        }
        if read < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// All of `bytes` to `fd`; false once it cannot take more (a closed pipe, a hung-up terminal).
fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: write from a live buffer of the given length.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        bytes = &bytes[written as usize..];
    }
    true
}

/// Runs the caller's side until the init is gone and the terminal (if any) drained: control
/// messages go to `on_message` and into the report, signals to the init (`pid`), terminal
/// bytes both ways.
pub(crate) fn relay(
    control: &UnixStream,
    signals: &Signals,
    attach: &Attach,
    pid: u32,
    on_message: &mut dyn FnMut(&Message) -> Result<(), SandboxError>,
) -> Result<Report, SandboxError> {
    let control_error = |source| SandboxError::Control { source };
    let mut report = Report::default();
    let mut pending = Vec::new();
    let mut received = Vec::new();
    let mut master: Option<OwnedFd> = None;
    let mut control_open = true;
    let mut stdin_open = attach.tty && attach.stdin;
    let _raw = match stdin_open && is_terminal(0) {
        true => RawTerminal::enter(0).ok(),
        false => None,
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let _ = io::stdout().flush();
    // Done once the command's status is known and its terminal drained: the init's exit
    // (the namespaces' teardown, 5 to 15 ms here) is not waited for; see `run_attached`.
    while (control_open && report.exited.is_none()) || master.is_some() {
        let master_fd = master.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        let stdin_fd = if stdin_open && master_fd >= 0 { 0 } else { -1 };
        let control_fd = if control_open {
            control.as_raw_fd()
        } else {
            -1
        };
        let mut polls =
            [control_fd, signals.fd.as_raw_fd(), master_fd, stdin_fd].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        // SAFETY: a valid array of pollfd; negative fds are ignored.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(control_error(error));
        }
        let ready = |slot: usize| polls[slot].fd >= 0 && polls[slot].revents != 0;
        if ready(1) {
            while let Some(signal) = signals.next() {
                match (signal, &master) {
                    (libc::SIGWINCH, Some(master)) => copy_size(master),
                    (libc::SIGWINCH, None) => {}
                    (signal, _) => {
                        let signal = match signal {
                            libc::SIGTERM => attach.stop_signal,
                            other => other,
                        };
                        // SAFETY: kill with the init's pid, which we have not reaped yet.
                        unsafe { libc::kill(pid as libc::pid_t, signal) };
                    }
                }
            }
        }
        if ready(2) {
            let fd = master_fd;
            match read_some(fd, &mut buffer) {
                Some(count) => {
                    write_all(1, &buffer[..count]);
                }
                None => master = None,
            }
        }
        if ready(3) {
            match read_some(0, &mut buffer) {
                Some(count) if write_all(master_fd, &buffer[..count]) => {}
                _ => stdin_open = false,
            }
        }
        if ready(0) {
            let count = fdpass::receive(control, &mut buffer, &mut received)
                .or_else(|error| match error.kind() {
                    io::ErrorKind::Interrupted => Ok(usize::MAX),
                    _ => Err(error),
                })
                .map_err(control_error)?;
            if count == 0 {
                control_open = false;
                continue;
            }
            if count == usize::MAX {
                continue;
            }
            pending.extend_from_slice(&buffer[..count]);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let message = super::parse_message(&line)?;
                on_message(&message)?;
                if message == Message::Console {
                    if let Some(fd) = received.pop() {
                        copy_size(&fd);
                        master = Some(fd);
                    }
                }
                report.note(message);
            }
        }
    }
    Ok(report)
}
