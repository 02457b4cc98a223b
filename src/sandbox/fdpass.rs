//! Control messages that carry a file descriptor: the pseudo-terminal master pid 1 hands to
//! `kiln run` (unix(7) SCM_RIGHTS over the control socket, as runc's console socket does).
//!
//! Consumes a connected unix stream socket and descriptors; produces one JSON line with the
//! descriptor attached, and on the receiving side the bytes read plus any descriptors that
//! came with them (close-on-exec). Must never leak a received descriptor: each is owned at
//! once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::spec::Message;

/// Room for the control message of one descriptor, aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// Sends `message` as one JSON line with `fd` attached.
pub(crate) fn send_with_fd(socket: &UnixStream, message: &Message, fd: RawFd) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut iov = libc::iovec {
        iov_base: line.as_mut_ptr().cast(),
        iov_len: line.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: the msghdr points at live buffers for the call; CMSG_* compute offsets inside
    // `control`, which is large and aligned enough for one descriptor.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        let sent = libc::sendmsg(socket.as_raw_fd(), &header, libc::MSG_NOSIGNAL);
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // The rest of a short write carries no descriptor; a line this small is never split
        // in practice, but finish it anyway.
        let sent = sent as usize;
        if sent < line.len() {
            io::Write::write_all(&mut &*socket, &line[sent..])?;
        }
    }
    Ok(())
}

/// Reads what is available into `buffer`, pushing any descriptors that came along onto
/// `fds`. Returns the number of bytes read (0 at end of stream).
pub(crate) fn receive(
    socket: &UnixStream,
    buffer: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: as in `send_with_fd`; every descriptor the kernel installed is taken into an
    // OwnedFd exactly once.
    unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control);
        let read = libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC);
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
        Ok(read as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut pipe_read, mut pipe_write) = {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            unsafe {
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            }
        };
        send_with_fd(&a, &Message::Console, pipe_write.as_raw_fd()).unwrap();
        let mut buffer = [0u8; 64];
        let mut fds = Vec::new();
        let read = receive(&b, &mut buffer, &mut fds).unwrap();
        assert_eq!(&buffer[..read], b"\"Console\"\n");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same pipe: what goes in comes out of our end.
        let mut received = std::fs::File::from(fds.pop().unwrap());
        received.write_all(b"x").unwrap();
        drop(received);
        pipe_write.write_all(b"y").unwrap();
        drop(pipe_write);
        let mut text = String::new();
        pipe_read.read_to_string(&mut text).unwrap();
        assert_eq!(text, "xy");
    }
}
