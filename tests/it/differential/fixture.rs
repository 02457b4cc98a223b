//! Differential cases on disk, and the build contexts made from them.
//!
//! A case is `fixtures/differential/<case>/` holding a `Dockerfile`, the context files, and
//! optionally:
//! - `Dockerfile.docker`: what docker builds instead, where dockerd 20.10's built-in frontend
//!   lacks the syntax (heredocs, `--link`, `--parents`, `--exclude`); it must say in a comment
//!   why it produces the same image under current BuildKit semantics;
//! - `setup`: commands applied to the temporary copy of the context (modes, symlinks, empty
//!   dirs, archives, host files: what git cannot keep or what must not be committed);
//! - `args`: extra build arguments, one flag per line (`--build-arg K=V`, `--target T`,
//!   `--secret id=X,src={ctx}/../file`); `{ctx}` stands for the prepared context's path;
//! - `args.after`: for cache scenarios, the arguments of the second build;
//! - `args.docker`: arguments only docker gets, standing in for syntax dockerd 20.10 lacks
//!   (`--network none` for `RUN --network=none`);
//! - `edit`: for cache scenarios, `setup` commands applied between the two builds;
//! - `check`: extra expectations, one per line: `mtime /path` (compare its mtime too),
//!   `absent TEXT` (TEXT appears in no file of either image, kiln's store, nor either
//!   progress log), `fails CODE LINE` (both builds fail, RUN's exit code CODE, kiln naming
//!   `Dockerfile:LINE`), `nonce /path` (cache scenarios: after the rebuild the file holds the
//!   scenario's `.nonce`), `cached TEXT` / `ran TEXT` (cache scenarios: on the rebuild the step
//!   shown as `[stage k/n] TEXT` was taken from the cache / ran, in each tool).
//!
//! Consumes the fixture folders; produces prepared temporary contexts. Never writes inside
//! fixtures/.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Files of a case folder that describe the case rather than belong to its context.
const CASE_FILES: &[&str] = &[
    "Dockerfile.docker",
    "setup",
    "args",
    "args.after",
    "args.docker",
    "edit",
    "check",
];

/// One case folder.
pub struct Case {
    /// The folder name.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
}

impl Case {
    /// Lines of the optional description file `file`, without blanks and `#` comments.
    pub fn lines(&self, file: &str) -> Result<Vec<String>, String> {
        let path = self.dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Build arguments from `file` (`args`, `args.after` or `args.docker`), split at the
    /// first space, with `{ctx}` replaced by the prepared context `ctx`.
    pub fn args(&self, file: &str, ctx: &Path) -> Result<Vec<String>, String> {
        let ctx = ctx.display().to_string();
        Ok(self
            .lines(file)?
            .iter()
            .map(|l| l.replace("{ctx}", &ctx))
            .flat_map(|l| match l.split_once(' ') {
                Some((flag, value)) => vec![flag.to_owned(), value.trim().to_owned()],
                None => vec![l.clone()],
            })
            .collect())
    }

    /// Everything `check` asks for.
    pub fn expectations(&self) -> Result<Expect, String> {
        let mut out = Expect::default();
        for line in self.lines("check")? {
            let unknown = || format!("{}/check: unknown line {line:?}", self.name);
            match line.split_once(' ') {
                Some(("mtime", path)) => {
                    out.mtime.insert(path.trim().to_owned());
                }
                Some(("absent", text)) => out.absent.push(text.trim().to_owned()),
                Some(("nonce", path)) => out.nonce.push(path.trim().to_owned()),
                Some(("cached", step)) => out.rebuild.push((step.trim().to_owned(), true)),
                Some(("ran", step)) => out.rebuild.push((step.trim().to_owned(), false)),
                Some(("fails", rest)) => {
                    let (code, line) = rest.trim().split_once(' ').ok_or_else(unknown)?;
                    out.fails = Some(Failure {
                        code: code.parse().map_err(|_| unknown())?,
                        line: line.trim().parse().map_err(|_| unknown())?,
                    });
                }
                _ => return Err(unknown()),
            }
        }
        Ok(out)
    }

    /// Copies the context into `dest` (which must not exist), leaves the description files
    /// out, copies `Dockerfile.docker` beside it when present, and applies `setup`. Returns
    /// the Dockerfile docker should use.
    pub fn prepare(&self, dest: &Path) -> Result<PathBuf, String> {
        copy_tree(&self.dir, dest)?;
        for file in CASE_FILES {
            let _ = std::fs::remove_file(dest.join(file));
        }
        apply(dest, &self.lines("setup")?)?;
        let special = self.dir.join("Dockerfile.docker");
        if special.is_file() {
            let out = dest.with_extension("Dockerfile.docker");
            std::fs::copy(&special, &out).map_err(|e| format!("{}: {e}", special.display()))?;
            Ok(out)
        } else {
            Ok(dest.join("Dockerfile"))
        }
    }
}

/// What a case's `check` file asks for beyond the tree and config comparison.
#[derive(Debug, Default)]
pub struct Expect {
    /// Paths ("/a/b") whose mtimes must match too.
    pub mtime: BTreeSet<String>,
    /// Texts (secrets) that must appear nowhere in an image, the kiln store or a progress log.
    pub absent: Vec<String>,
    /// Set when both builds must fail in a RUN.
    pub fails: Option<Failure>,
    /// Paths that must hold the scenario's nonce after a cache scenario's rebuild.
    pub nonce: Vec<String>,
    /// Steps (their text after the `[stage k/n] ` label) a cache scenario's rebuild must take
    /// from the cache (true) or run (false).
    pub rebuild: Vec<(String, bool)>,
}

/// How a build that must fail fails.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    /// The failing command's exit code, shown by both tools as `exit code: CODE`.
    pub code: i32,
    /// The RUN's line in the Dockerfile, shown by kiln as `Dockerfile:LINE`.
    pub line: u32,
}

/// Every case folder under `root` whose name does not start with '_', sorted by name.
pub fn cases(root: &Path) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('_') {
            out.push(Case {
                name,
                dir: entry.path(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let rel = entry.path().strip_prefix(from).map_err(|e| e.to_string())?;
        let target = to.join(rel);
        let fail = |e: std::io::Error| format!("copying {}: {e}", entry.path().display());
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(fail)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).map_err(fail)?;
            std::os::unix::fs::symlink(link, &target).map_err(fail)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(fail)?;
        }
        if !kind.is_symlink() {
            // A checkout's modes follow the umask; only git's executable bit is meant.
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(entry.path()).map_err(fail)?;
            let mode = if kind.is_dir() || meta.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// Applies setup commands to the context at `root`:
/// `host SRC DEST`, `chmod MODE PATH`, `symlink TARGET PATH`, `hardlink EXISTING PATH`,
/// `mkdir PATH`, `write PATH TEXT`, `remove PATH`, `rename FROM TO`, `mtime SECONDS PATH`,
/// `archive FORMAT OUT DIR` (FORMAT tar, tar.gz, tar.bz2, tar.xz or tar.zst; DIR is removed
/// afterwards, entries owned 1001:1002 with the files' modes).
pub fn apply(root: &Path, commands: &[String]) -> Result<(), String> {
    for line in commands {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |p: &str| root.join(p);
        let fail = |e: std::io::Error| format!("setup {line:?}: {e}");
        match words.as_slice() {
            ["host", src, dest] => {
                create_parent(&at(dest)).map_err(fail)?;
                std::fs::copy(src, at(dest)).map_err(fail)?;
            }
            ["chmod", mode, path] => {
                let mode = u32::from_str_radix(mode, 8).map_err(|e| format!("{line:?}: {e}"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(at(path), std::fs::Permissions::from_mode(mode))
                    .map_err(fail)?;
            }
            ["symlink", target, path] => {
                create_parent(&at(path)).map_err(fail)?;
                std::os::unix::fs::symlink(target, at(path)).map_err(fail)?;
            }
            ["hardlink", existing, path] => {
                std::fs::hard_link(at(existing), at(path)).map_err(fail)?
            }
            ["mkdir", path] => std::fs::create_dir_all(at(path)).map_err(fail)?,
            ["write", path, ..] => {
                let text = line.splitn(3, ' ').nth(2).unwrap_or_default();
                create_parent(&at(path)).map_err(fail)?;
                std::fs::write(at(path), format!("{text}\n")).map_err(fail)?;
            }
            ["remove", path] => std::fs::remove_file(at(path)).map_err(fail)?,
            ["rename", from, to] => std::fs::rename(at(from), at(to)).map_err(fail)?,
            ["mtime", secs, path] => {
                let secs: i64 = secs.parse().map_err(|e| format!("{line:?}: {e}"))?;
                set_mtime(&at(path), secs).map_err(fail)?;
            }
            ["archive", format, out, dir] => {
                archive(&at(dir), &at(out), format)?;
                std::fs::remove_dir_all(at(dir)).map_err(fail)?;
            }
            _ => return Err(format!("unknown setup command {line:?}")),
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// Sets both times of `path` (not following a final symlink).
fn set_mtime(path: &Path, secs: i64) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let time = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

/// Writes the files under `dir` as a tar archive at `out`, compressed per `format`.
fn archive(dir: &Path, out: &Path, format: &str) -> Result<(), String> {
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let writer: Box<dyn Write> = match format {
        "tar" => Box::new(file),
        "tar.gz" => Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        )),
        "tar.bz2" => Box::new(bzip2::write::BzEncoder::new(
            file,
            bzip2::Compression::default(),
        )),
        "tar.xz" => Box::new(xz2::write::XzEncoder::new(file, 6)),
        "tar.zst" => Box::new(
            zstd::Encoder::new(file, 3)
                .map_err(|e| format!("{}: {e}", out.display()))?
                .auto_finish(),
        ),
        _ => return Err(format!("unknown archive format {format:?}")),
    };
    let mut builder = tar::Builder::new(writer);
    builder.follow_symlinks(false);
    let fail = |e: std::io::Error| format!("archiving {}: {e}", dir.display());
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let rel = entry.path().strip_prefix(dir).map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(entry.path()).map_err(fail)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        // Fixed owners show whether ADD keeps the archive's owners.
        header.set_uid(1001);
        header.set_gid(1002);
        header.set_mtime(1_500_000_000);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(fail)?;
            builder
                .append_link(&mut header, rel, target)
                .map_err(fail)?;
        } else if meta.is_dir() {
            builder
                .append_data(&mut header, rel, std::io::empty())
                .map_err(fail)?;
        } else {
            let file = std::fs::File::open(entry.path()).map_err(fail)?;
            builder.append_data(&mut header, rel, file).map_err(fail)?;
        }
    }
    let mut writer = builder.into_inner().map_err(fail)?;
    writer.flush().map_err(fail)?;
    drop(writer);
    Ok(())
}
