//! Linux capabilities: names to numbers, and the drop to the spec's set in the sandbox.
//!
//! Consumes capability names; produces a 64-bit set and, in the init only, the capset(2) and
//! prctl(2) calls. Must never raise a capability or run in the build process.

use std::io;

/// Capability numbers from `linux/capability.h`, in order; the index is the number.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The bit set of the named capabilities (`CAP_X` or `X`, any case), or the first unknown
/// name.
pub(crate) fn parse_set(names: &[String]) -> Result<u64, String> {
    let mut set = 0u64;
    for name in names {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        let number = NAMES
            .iter()
            .position(|known| *known == bare)
            .ok_or_else(|| name.clone())?;
        set |= 1 << number;
    }
    Ok(set)
}

/// `struct __user_cap_header_struct` of capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct` of capset(2); version 3 takes two of them (low, high).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Reduces this process to `keep`, while it is still uid 0 in its namespace:
/// 1. prctl(2) PR_CAPBSET_DROP every other capability up to `cap_last_cap`, so no later
///    execve of a file with capabilities can gain them (capabilities(7), "bounding set");
///    needs CAP_SETPCAP, so it comes first.
/// 2. PR_CAP_AMBIENT_CLEAR_ALL: nothing survives execve by the ambient set.
/// 3. capset(2): effective = permitted = `keep`, inheritable empty (moby's answer to
///    CVE-2022-24769: a non-empty inheritable set let execve of file-capability binaries
///    gain capabilities).
///
/// A later setuid(2) to a non-zero uid clears permitted and effective (capabilities(7),
/// "Effect of user ID changes on capabilities"), as in Docker for a non-root USER.
pub(crate) fn restrict(keep: u64) -> io::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(NAMES.len() as u32 - 1);
    for cap in 0..=last.min(63) {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    let data = [
        CapData {
            effective: low,
            permitted: low,
            inheritable: 0,
        },
        CapData {
            effective: high,
            permitted: high,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data are the version-3 layout capset(2) reads, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_bits() {
        let table: [(&[&str], Result<u64, &str>); 5] = [
            (&[], Ok(0)),
            (&["CAP_CHOWN"], Ok(1)),
            (&["chown", "CAP_KILL"], Ok(1 | 1 << 5)),
            (&["CAP_CHECKPOINT_RESTORE"], Ok(1 << 40)),
            (&["CAP_NOPE"], Err("CAP_NOPE")),
        ];
        for (names, want) in table {
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            assert_eq!(parse_set(&names), want.map_err(str::to_string), "{names:?}");
        }
    }

    #[test]
    fn docker_default_set_is_the_known_mask() {
        let names: Vec<String> = super::super::DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        // Docker's CapBnd for a default container.
        assert_eq!(parse_set(&names), Ok(0xa8_0425fb));
    }
}
