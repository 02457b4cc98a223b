//! A flattened image file system, built by applying layer tars in order, and the comparison
//! of two of them.
//!
//! Consumes uncompressed layer tars (the caller decompresses); produces a map from path to
//! what a container would see there, and readable lines naming every difference. It never
//! touches the real file system: contents are hashed as they stream past, not kept.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use sha2::{Digest as _, Sha256};

/// What kind of file sits at a path, with the fields that matter for that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file: its size and the sha256 of its content (lower-case hex).
    File { size: u64, sha256: String },
    /// A symbolic link and its target, as written.
    Symlink(String),
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice(u32, u32),
    /// A block device.
    BlockDevice(u32, u32),
}

impl Kind {
    /// A short description for diff lines.
    pub fn describe(&self) -> String {
        match self {
            Kind::Dir => "dir".to_owned(),
            Kind::File { size, sha256 } => {
                format!(
                    "file {size} bytes sha256:{}",
                    sha256.get(..12).unwrap_or(sha256)
                )
            }
            Kind::Symlink(target) => format!("symlink -> {target}"),
            Kind::Fifo => "fifo".to_owned(),
            Kind::CharDevice(major, minor) => format!("char device {major},{minor}"),
            Kind::BlockDevice(major, minor) => format!("block device {major},{minor}"),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File { .. } => "file",
            Kind::Symlink(_) => "symlink",
            Kind::Fifo => "fifo",
            Kind::CharDevice(..) => "char device",
            Kind::BlockDevice(..) => "block device",
        }
    }
}

/// One path of the flattened tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Type and type-specific fields.
    pub kind: Kind,
    /// Permission bits plus setuid, setgid and sticky (0o7777).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Modification time in whole seconds.
    pub mtime: u64,
    /// Identity shared by hardlinked paths; unique otherwise.
    inode: u64,
}

/// The file system a container would see after extracting every layer in order.
#[derive(Clone, Debug)]
pub struct Tree {
    /// Paths without leading or trailing '/'; the root is "".
    pub nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

/// An entry of one layer, read before it is applied so whiteouts can go first.
enum Change {
    Add(String, Node),
    Hardlink { path: String, target: String },
}

/// What to compare beyond the default fields.
#[derive(Clone, Debug, Default)]
pub struct Checks {
    /// Paths ("/a/b") whose mtime must match too.
    pub mtime: BTreeSet<String>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree::new()
    }
}

impl Tree {
    /// An empty root directory (0755, root-owned), as a runtime creates before extracting.
    pub fn new() -> Tree {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            String::new(),
            Node {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                inode: 0,
            },
        );
        Tree {
            nodes,
            next_inode: 1,
        }
    }

    /// Applies one uncompressed layer tar: first its whiteouts and opaque markers against the
    /// layers below (the OCI layer spec scopes them to lower layers), then its entries in
    /// order.
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<(), String> {
        let mut archive = tar::Archive::new(layer);
        let mut changes = Vec::new();
        let mut removals = Vec::new();
        let mut opaques = Vec::new();
        let entries = archive
            .entries()
            .map_err(|e| format!("reading layer: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading layer entry: {e}"))?;
            let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            let (parent, name) = split(&path);
            if name == ".wh..wh..opq" {
                opaques.push(parent.to_owned());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                removals.push(join(parent, hidden));
                continue;
            }
            if let Some(change) = self.read_entry(&mut entry, path)? {
                changes.push(change);
            }
        }
        for dir in opaques {
            self.remove_children(&dir);
        }
        for path in removals {
            self.remove_subtree(&path);
        }
        for change in changes {
            match change {
                Change::Add(path, node) => self.insert(path, node),
                Change::Hardlink { path, target } => {
                    let node = self.nodes.get(&target).cloned().ok_or_else(|| {
                        format!("hardlink /{path} points at /{target}, which does not exist")
                    })?;
                    self.insert(path, node);
                }
            }
        }
        Ok(())
    }

    fn read_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        path: String,
    ) -> Result<Option<Change>, String> {
        let header = entry.header().clone();
        let bad = |what: &str, e: std::io::Error| format!("/{path}: bad {what}: {e}");
        let mut uid = header.uid().map_err(|e| bad("uid", e))?;
        let mut gid = header.gid().map_err(|e| bad("gid", e))?;
        let mut mtime = header.mtime().map_err(|e| bad("mtime", e))?;
        // PAX records override the ustar fields when a value does not fit them.
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let value = ext
                    .value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse().ok());
                match (ext.key().unwrap_or(""), value) {
                    ("uid", Some(v)) => uid = v,
                    ("gid", Some(v)) => gid = v,
                    ("mtime", Some(v)) => mtime = v,
                    _ => {}
                }
            }
        }
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let link = || {
            entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default()
        };
        let device = |h: &tar::Header| -> (u32, u32) {
            (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            )
        };
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hasher = Sha256::new();
                let size = std::io::copy(entry, &mut hasher).map_err(|e| bad("content", e))?;
                Kind::File {
                    size,
                    sha256: hex(&hasher.finalize()),
                }
            }
            tar::EntryType::Symlink => Kind::Symlink(link()),
            tar::EntryType::Link => {
                return Ok(Some(Change::Hardlink {
                    path,
                    target: normalize(&link()),
                }))
            }
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::Char => {
                let (major, minor) = device(&header);
                Kind::CharDevice(major, minor)
            }
            tar::EntryType::Block => {
                let (major, minor) = device(&header);
                Kind::BlockDevice(major, minor)
            }
            // Global PAX headers and other metadata-only records carry no file.
            _ => return Ok(None),
        };
        let inode = self.next_inode;
        self.next_inode += 1;
        Ok(Some(Change::Add(
            path,
            Node {
                kind,
                mode,
                uid,
                gid,
                mtime,
                inode,
            },
        )))
    }

    fn insert(&mut self, path: String, node: Node) {
        self.ensure_parents(&path);
        let keep_children = node.kind == Kind::Dir
            && self
                .nodes
                .get(&path)
                .is_some_and(|old| old.kind == Kind::Dir);
        if !keep_children {
            self.remove_subtree(&path);
        }
        self.nodes.insert(path, node);
    }

    /// Creates missing parents the way an extractor does: 0755, root-owned.
    fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(offset) = path.get(end..).and_then(|rest| rest.find('/')) {
            end += offset;
            let parent = path.get(..end).unwrap_or_default().to_owned();
            let exists = self.nodes.get(&parent).is_some_and(|n| n.kind == Kind::Dir);
            if !exists {
                self.remove_subtree(&parent);
                let inode = self.next_inode;
                self.next_inode += 1;
                self.nodes.insert(
                    parent,
                    Node {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: 0,
                        inode,
                    },
                );
            }
            end += 1;
        }
    }

    fn remove_subtree(&mut self, path: &str) {
        if !path.is_empty() {
            self.nodes.remove(path);
        }
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .filter(|p| !p.is_empty())
            .collect();
        for path in doomed {
            self.nodes.remove(&path);
        }
    }

    /// Sets of paths ("/a") that share one file, for every file with more than one path.
    pub fn hardlink_groups(&self) -> BTreeSet<Vec<String>> {
        let mut by_inode: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (path, node) in &self.nodes {
            if matches!(node.kind, Kind::File { .. }) {
                by_inode
                    .entry(node.inode)
                    .or_default()
                    .push(format!("/{path}"));
            }
        }
        by_inode
            .into_values()
            .filter(|group| group.len() > 1)
            .collect()
    }
}

/// Lines naming each difference between `left` and `right` (labelled by `names`); empty when
/// the trees agree on every compared field.
pub fn compare(left: &Tree, right: &Tree, names: (&str, &str), checks: &Checks) -> Vec<String> {
    let (l, r) = names;
    let mut out = Vec::new();
    let paths: BTreeSet<&String> = left.nodes.keys().chain(right.nodes.keys()).collect();
    for path in paths {
        let shown = format!("/{path}");
        match (left.nodes.get(path), right.nodes.get(path)) {
            (Some(a), None) => out.push(format!("{shown}: only in {l} ({})", summary(a))),
            (None, Some(b)) => out.push(format!("{shown}: only in {r} ({})", summary(b))),
            (Some(a), Some(b)) => {
                let mut fields = Vec::new();
                if a.kind.type_name() != b.kind.type_name() {
                    fields.push(("type", a.kind.describe(), b.kind.describe()));
                } else if a.kind != b.kind {
                    fields.push(("content", a.kind.describe(), b.kind.describe()));
                }
                if a.mode != b.mode {
                    fields.push(("mode", format!("{:04o}", a.mode), format!("{:04o}", b.mode)));
                }
                if a.uid != b.uid {
                    fields.push(("uid", a.uid.to_string(), b.uid.to_string()));
                }
                if a.gid != b.gid {
                    fields.push(("gid", a.gid.to_string(), b.gid.to_string()));
                }
                if checks.mtime.contains(&shown) && a.mtime != b.mtime {
                    fields.push(("mtime", a.mtime.to_string(), b.mtime.to_string()));
                }
                for (field, x, y) in fields {
                    out.push(format!("{shown}: {field} {l}={x} {r}={y}"));
                }
            }
            (None, None) => {}
        }
    }
    for path in &checks.mtime {
        if !left.nodes.contains_key(path.trim_start_matches('/')) {
            out.push(format!("{path}: mtime check names a path absent from {l}"));
        }
    }
    let (lg, rg) = (left.hardlink_groups(), right.hardlink_groups());
    for group in lg.difference(&rg) {
        out.push(format!("hardlinks {} only in {l}", group.join(" = ")));
    }
    for group in rg.difference(&lg) {
        out.push(format!("hardlinks {} only in {r}", group.join(" = ")));
    }
    out
}

fn summary(node: &Node) -> String {
    format!(
        "{}, {:04o} {}:{}",
        node.kind.describe(),
        node.mode,
        node.uid,
        node.gid
    )
}

/// "./a/b/", "/a/b" and "a/b" all become "a/b"; "." and "./" become "".
fn normalize(raw: &str) -> String {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    parts.join("/")
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (path.get(..i).unwrap_or(""), path.get(i + 1..).unwrap_or("")),
        None => ("", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry of a synthetic layer: path, type, mode, owner, and content or link target.
    struct E(&'static str, tar::EntryType, u32, u64, &'static str);

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for E(path, kind, mode, owner, data) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_uid(*owner);
            header.set_gid(*owner);
            header.set_mtime(1_600_000_000);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                data.as_bytes()
            } else {
                b""
            };
            header.set_size(body.len() as u64);
            if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                builder
                    .append_link(&mut header, path, data)
                    .expect("link entry");
            } else {
                builder.append_data(&mut header, path, body).expect("entry");
            }
        }
        builder.into_inner().expect("layer")
    }

    fn tree(layers: &[&[E]]) -> Tree {
        let mut tree = Tree::new();
        for entries in layers {
            tree.apply_layer(layer(entries).as_slice())
                .expect("layer applies");
        }
        tree
    }

    fn paths(tree: &Tree) -> Vec<&str> {
        tree.nodes.keys().map(String::as_str).collect()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn whiteouts_and_opaque_markers_hide_only_lower_layers() {
        let t = tree(&[
            &[
                E("a/", D, 0o755, 0, ""),
                E("a/x", F, 0o644, 0, "x"),
                E("b/", D, 0o755, 0, ""),
                E("b/y", F, 0o644, 0, "y"),
                E("c", F, 0o644, 0, "c"),
            ],
            &[
                E("a/new", F, 0o600, 0, "n"),
                E("a/.wh..wh..opq", F, 0o644, 0, ""),
                E(".wh.c", F, 0o644, 0, ""),
                E("b/.wh.y", F, 0o644, 0, ""),
            ],
        ]);
        assert_eq!(paths(&t), ["", "a", "a/new", "b"]);
    }

    #[test]
    fn files_replace_directories_with_their_children_and_dirs_keep_children() {
        let t = tree(&[
            &[
                E("d/", D, 0o755, 0, ""),
                E("d/f", F, 0o644, 0, "f"),
                E("e/", D, 0o700, 0, ""),
            ],
            &[
                E("d", F, 0o644, 0, "now a file"),
                E("e/", D, 0o711, 5, ""),
                E("e/g", F, 0, 0, ""),
            ],
        ]);
        assert_eq!(paths(&t), ["", "d", "e", "e/g"]);
        let e = &t.nodes["e"];
        assert_eq!((e.mode, e.uid), (0o711, 5));
    }

    #[test]
    fn missing_parents_appear_as_root_owned_0755_dirs() {
        let t = tree(&[&[E("p/q/r", F, 0o640, 7, "r")]]);
        assert_eq!(paths(&t), ["", "p", "p/q", "p/q/r"]);
        assert_eq!(t.nodes["p/q"].mode, 0o755);
        assert_eq!(t.nodes["p/q/r"].uid, 7);
    }

    #[test]
    fn hardlinks_share_metadata_and_form_groups() {
        let t = tree(&[&[
            E("f", F, 0o751, 3, "data"),
            E("g", H, 0o644, 0, "f"),
            E("l", S, 0o777, 0, "f"),
        ]]);
        assert_eq!(t.nodes["g"].mode, 0o751);
        assert_eq!(
            t.hardlink_groups(),
            BTreeSet::from([vec!["/f".to_owned(), "/g".to_owned()]])
        );
        assert_eq!(t.nodes["l"].kind, Kind::Symlink("f".to_owned()));
    }

    #[test]
    fn compare_names_every_differing_field() {
        let a = tree(&[&[
            E("f", F, 0o644, 0, "one"),
            E("g", H, 0, 0, "f"),
            E("s", S, 0o777, 0, "f"),
        ]]);
        let b = tree(&[&[
            E("f", F, 0o600, 1, "two"),
            E("g", F, 0o644, 0, "one"),
            E("t", F, 0, 0, ""),
        ]]);
        let lines = compare(&a, &b, ("docker", "kiln"), &Checks::default());
        let text = lines.join("\n");
        for want in [
            "/f: content docker=file 3 bytes",
            "/f: mode docker=0644 kiln=0600",
            "/f: uid docker=0 kiln=1",
            "/s: only in docker (symlink -> f",
            "/t: only in kiln (file 0 bytes",
            "hardlinks /f = /g only in docker",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(compare(&a, &a, ("docker", "kiln"), &Checks::default()).is_empty());
    }

    #[test]
    fn mtimes_are_compared_only_where_asked() {
        let mut a = tree(&[&[E("f", F, 0o644, 0, "x")]]);
        let b = a.clone();
        a.nodes.get_mut("f").expect("f").mtime = 1;
        assert!(compare(&a, &b, ("l", "r"), &Checks::default()).is_empty());
        let checks = Checks {
            mtime: BTreeSet::from(["/f".to_owned()]),
        };
        assert_eq!(
            compare(&a, &b, ("l", "r"), &checks),
            ["/f: mtime l=1 r=1600000000"]
        );
    }
}
