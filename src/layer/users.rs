//! User and group names → numeric ids, read from a rootfs's `/etc/passwd` and `/etc/group`.
//!
//! Consumes a [`RootfsView`] and a user spec; produces ids. Two rule sets, because BuildKit
//! has two (checked against dockerd 20.10):
//!
//! - [`chown_ids`], for `COPY --chown`/`ADD --chown` (BuildKit's file-op user lookup): a numeric
//!   user gets the same number as group, whatever passwd says; a named user gets passwd's uid
//!   and primary gid; an unknown user name gives 0:0 and an unknown group name keeps the user's
//!   gid (no error, as BuildKit); an empty group after `:` gives gid 0.
//! - [`lookup_user`], for `USER` (BuildKit's executor: a numeric fast path, then the rules of
//!   runc's `GetExecUser`): `uid`, `uid:gid` and `root` need no files and a lone uid gets the
//!   same number as gid; otherwise a numeric uid matches passwd by id (its primary gid, or 0
//!   when absent), an unknown user or group name is an error, and supplementary groups are the
//!   groups listing the user's name when no group was given.
//!
//! Never writes, and never reads outside the view.

use super::{LayerError, Result, RootfsView};

/// The ids `COPY --chown` resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chown {
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// A user name that passwd does not know (BuildKit then uses uid 0 and gid 0).
    pub unknown_user: Option<String>,
    /// A group name that group does not know (BuildKit then keeps the user's gid).
    pub unknown_group: Option<String>,
}

/// The identity a process runs with for `USER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids, in `/etc/group` order.
    pub additional_gids: Vec<u32>,
    /// Home directory from passwd, `/` when unknown.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Go's `strconv.Atoi` as runc uses it for passwd fields: unparsable text counts as 0.
fn field_id(text: &str) -> u32 {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// A decimal id as BuildKit parses one (`strconv.ParseUint(s, 10, 32)`).
fn numeric_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn read_lines(view: &RootfsView, path: &str) -> Result<Vec<String>> {
    let bytes = match view.read_file(path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) | Err(LayerError::NotAFile { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

fn passwd(view: &RootfsView) -> Result<Vec<PasswdEntry>> {
    Ok(read_lines(view, "/etc/passwd")?
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            PasswdEntry {
                name: get(0).to_string(),
                uid: field_id(get(2)),
                gid: field_id(get(3)),
                home: get(5).to_string(),
            }
        })
        .collect())
}

fn groups(view: &RootfsView) -> Result<Vec<GroupEntry>> {
    Ok(read_lines(view, "/etc/group")?
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            GroupEntry {
                name: get(0).to_string(),
                gid: field_id(get(2)),
                members: get(3)
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect())
}

/// Resolves a `--chown` spec (`user`, `user:group`, names or ids) the way BuildKit's file
/// operations do; see the module doc.
///
/// # Errors
/// Only [`LayerError::Fs`]-style errors reading `/etc/passwd` or `/etc/group` from the view.
pub fn chown_ids(view: &RootfsView, spec: &str) -> Result<Chown> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let mut out = Chown {
        uid: 0,
        gid: 0,
        unknown_user: None,
        unknown_group: None,
    };
    match numeric_id(user) {
        Some(id) => {
            out.uid = id;
            out.gid = id;
        }
        None => match passwd(view)?.into_iter().find(|p| p.name == user) {
            Some(p) => {
                out.uid = p.uid;
                out.gid = p.gid;
            }
            None => out.unknown_user = Some(user.to_string()),
        },
    }
    match group {
        None => {}
        Some("") => out.gid = 0,
        Some(group) => match numeric_id(group) {
            Some(id) => out.gid = id,
            None => match groups(view)?.into_iter().find(|g| g.name == group) {
                Some(g) => out.gid = g.gid,
                None => out.unknown_group = Some(group.to_string()),
            },
        },
    }
    Ok(out)
}

/// Resolves a `USER` spec the way BuildKit's executor does; see the module doc.
///
/// # Errors
/// [`LayerError::UnknownUser`] for a user name (or out-of-range id) passwd lacks,
/// [`LayerError::UnknownGroup`] likewise for a group, and errors reading the files.
pub fn lookup_user(view: &RootfsView, spec: &str) -> Result<ExecUser> {
    // BuildKit's executor skips the files only for a numeric `uid:gid`; anything else,
    // a lone uid included, goes through runc's GetExecUser: primary group, supplementary
    // groups and home from passwd when the user is listed, gid 0 and HOME=/ when not.
    let numeric_pair = spec
        .split_once(':')
        .and_then(|(user, group)| numeric_id(user).zip(numeric_id(group)));
    if let Some((uid, gid)) = numeric_pair {
        return Ok(ExecUser {
            uid,
            gid,
            additional_gids: Vec::new(),
            home: "/".to_string(),
        });
    }
    let mut parts = spec.split(':');
    let user_arg = parts.next().unwrap_or("");
    let group_arg = parts.next().unwrap_or("");
    let uid_arg = numeric_id(user_arg);
    let users = passwd(view)?;
    let matched = users.into_iter().find(|p| {
        if user_arg.is_empty() {
            p.uid == 0
        } else if let Some(uid) = uid_arg {
            p.uid == uid
        } else {
            p.name == user_arg
        }
    });
    let mut out = ExecUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let mut matched_name = String::new();
    match matched {
        Some(p) => {
            out.uid = p.uid;
            out.gid = p.gid;
            out.home = p.home;
            matched_name = p.name;
        }
        None if user_arg.is_empty() => {}
        None => match uid_arg {
            Some(uid) => out.uid = uid,
            None => {
                return Err(LayerError::UnknownUser {
                    name: user_arg.to_string(),
                })
            }
        },
    }
    if group_arg.is_empty() && matched_name.is_empty() {
        return Ok(out);
    }
    let gid_arg = numeric_id(group_arg);
    let found: Vec<u32> = groups(view)?
        .into_iter()
        .filter(|g| {
            if group_arg.is_empty() {
                g.members.contains(&matched_name)
            } else {
                g.name == group_arg || gid_arg == Some(g.gid)
            }
        })
        .map(|g| g.gid)
        .collect();
    if group_arg.is_empty() {
        out.additional_gids = found;
    } else {
        out.gid = match (found.first(), gid_arg) {
            (Some(&gid), _) => gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(LayerError::UnknownGroup {
                    name: group_arg.to_string(),
                })
            }
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_with(passwd: &str, group: &str) -> (tempfile::TempDir, RootfsView) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.path().join("etc/group"), group).unwrap();
        let view = RootfsView::new(vec![dir.path().to_path_buf()]);
        (dir, view)
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nalice:x:1001:1002::/home/alice:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nstaff:x:50:alice\ngrp:x:1002:\nalice:x:77:\nwheel:x:10:bob,alice\n";

    /// Expected values measured with `COPY --chown=<spec>` on dockerd 20.10 (BuildKit).
    #[test]
    fn chown_ids_match_buildkit() {
        let (_dir, view) = view_with(PASSWD, GROUP);
        let cases = [
            ("1234", (1234, 1234)),
            ("1234:77", (1234, 77)),
            ("alice", (1001, 1002)),
            ("alice:staff", (1001, 50)),
            ("alice:60", (1001, 60)),
            ("1001", (1001, 1001)),
            ("1001:staff", (1001, 50)),
            ("nosuch", (0, 0)),
            ("alice:nogroup", (1001, 1002)),
            ("0:staff", (0, 50)),
            ("root", (0, 0)),
            (":staff", (0, 50)),
            ("alice:", (1001, 0)),
            ("42:alice", (42, 77)),
        ];
        for (spec, want) in cases {
            let got = chown_ids(&view, spec).unwrap();
            assert_eq!((got.uid, got.gid), want, "{spec:?}");
        }
        let got = chown_ids(&view, "nosuch:nogroup").unwrap();
        assert_eq!(got.unknown_user.as_deref(), Some("nosuch"));
        assert_eq!(got.unknown_group.as_deref(), Some("nogroup"));
    }

    /// Numeric `uid:gid` never reads the rootfs: it works even over a snapshot that is gone,
    /// where a name must fail.
    #[test]
    fn numeric_ids_need_no_files() {
        let gone = tempfile::tempdir().unwrap().path().to_path_buf();
        let view = RootfsView::new(vec![gone]);
        let got = chown_ids(&view, "5:6").unwrap();
        assert_eq!((got.uid, got.gid), (5, 6));
        assert_eq!(lookup_user(&view, "7:8").unwrap().gid, 8);
        assert!(matches!(
            chown_ids(&view, "alice"),
            Err(LayerError::Fs { .. })
        ));
    }

    #[test]
    fn lookup_user_table() {
        let (_dir, view) = view_with(PASSWD, GROUP);
        let user = |uid, gid, extra: &[u32], home: &str| ExecUser {
            uid,
            gid,
            additional_gids: extra.to_vec(),
            home: home.to_string(),
        };
        let cases = [
            ("", user(0, 0, &[], "/root")),
            ("1000", user(1000, 0, &[], "/")),
            ("1001", user(1001, 1002, &[50, 10], "/home/alice")),
            ("1000:5", user(1000, 5, &[], "/")),
            ("root", user(0, 0, &[], "/root")),
            ("root:root", user(0, 0, &[], "/root")),
            ("alice", user(1001, 1002, &[50, 10], "/home/alice")),
            ("alice:staff", user(1001, 50, &[], "/home/alice")),
            ("alice:99", user(1001, 99, &[], "/home/alice")),
            ("1001:staff", user(1001, 50, &[], "/home/alice")),
            ("4242:staff", user(4242, 50, &[], "/")),
            (":staff", user(0, 50, &[], "/root")),
        ];
        for (spec, want) in cases {
            assert_eq!(lookup_user(&view, spec).unwrap(), want, "{spec:?}");
        }
        for (spec, name) in [("nosuch", "nosuch"), ("nosuch:staff", "nosuch")] {
            match lookup_user(&view, spec) {
                Err(LayerError::UnknownUser { name: got }) => assert_eq!(got, name),
                other => panic!("{spec:?}: {other:?}"),
            }
        }
        match lookup_user(&view, "alice:nogroup") {
            Err(LayerError::UnknownGroup { name }) => assert_eq!(name, "nogroup"),
            other => panic!("{other:?}"),
        }
        let err = lookup_user(&view, "nosuch").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nosuch: no matching entries in passwd file"
        );
    }
}
