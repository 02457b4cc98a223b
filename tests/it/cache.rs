//! The cache stage on real directories: golden key digests (fixtures/cache/golden.txt,
//! `BLESS=1` rewrites), the context walk with `.dockerignore` on disk (including the
//! conformance context-walk and BuildKit scenario cases, with counts), the stat cache's
//! no-reread guarantee, and which changes move a COPY key.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln::cache::contenthash::{directory_digest, entry_digest, ContentHasher, StatCacheStorage};
use kiln::cache::index::StepLocator;
use kiln::cache::key::{
    copy_key, from_key, metadata_key, run_key, workdir_key, BaseIdentity, CopyKeyInputs,
    RunKeyInputs, SourceIdentity,
};
use kiln::context::ignore::ContextFilter;
use kiln::context::{read_dockerignore, walk, walk_with, Context, Entry, EntryKind};
use kiln::digest::Digest;
use kiln::graph::ArgValues;

use crate::util::{check_golden, conformance_dir, finish, fixtures_dir};

fn args(pairs: &[(&str, Option<&str>)]) -> ArgValues {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.map(str::to_owned)))
        .collect()
}

fn copy_inputs<'a>(
    parent: &'a Digest,
    files: &'a [(String, Digest)],
    args: &'a ArgValues,
) -> CopyKeyInputs<'a> {
    CopyKeyInputs {
        parent,
        keyword: "COPY",
        source: SourceIdentity::Context,
        sources: &[],
        files,
        dest: "/app/",
        chown: None,
        chmod: None,
        link: false,
        parents: false,
        exclude: &[],
        checksum: None,
        keep_git_dir: false,
        unpack: None,
        args,
        text: "COPY . /app/",
    }
}

fn fixed_entry(path: &str, kind: EntryKind, mode: u32, size: u64) -> Entry {
    Entry {
        path: path.to_owned(),
        kind,
        mode,
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        ino: 1,
        dev: 1,
        uid: 1000,
        gid: 1000,
    }
}

/// Every key builder and content digest on fixed inputs; a change to the encoding or to any
/// key's fields shows up here.
#[test]
fn golden_keys() {
    let parent = Digest::of(b"parent");
    let manifest = Digest::of(b"manifest");
    let files = vec![
        ("package.json".to_owned(), Digest::of(b"package")),
        ("src/index.js".to_owned(), Digest::of(b"index")),
    ];
    let no_args = ArgValues::new();
    let version = args(&[("VERSION", Some("1.0")), ("UNSET", None)]);
    let sources = vec!["package.json".to_owned(), "src".to_owned()];
    let exclude = vec!["*.md".to_owned()];
    let url_files = vec![("app.tar.gz".to_owned(), Digest::of(b"download"))];
    let url_sources = vec!["https://example.com/app.tar.gz".to_owned()];
    let run_command = vec!["npm ci".to_owned()];
    let shell = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    let env = vec![
        "PATH=/usr/bin:/bin".to_owned(),
        "NODE_ENV=production".to_owned(),
    ];
    let mounts = vec!["type=cache,target=/root/.npm".to_owned()];
    let mut keys: Vec<(&str, Digest)> = vec![
        (
            "from-scratch",
            from_key(&BaseIdentity::Scratch, "linux/amd64").digest,
        ),
        (
            "from-image",
            from_key(&BaseIdentity::Image { manifest }, "linux/arm64/v8").digest,
        ),
        (
            "from-stage",
            from_key(&BaseIdentity::Stage { key: parent }, "linux/amd64").digest,
        ),
        (
            "copy-context",
            copy_key(&CopyKeyInputs {
                sources: &sources,
                ..copy_inputs(&parent, &files, &no_args)
            })
            .digest,
        ),
        (
            "copy-flags",
            copy_key(&CopyKeyInputs {
                sources: &sources,
                chown: Some("1000:1000"),
                chmod: Some("0755"),
                link: true,
                parents: true,
                exclude: &exclude,
                ..copy_inputs(&parent, &files, &version)
            })
            .digest,
        ),
        (
            "copy-from-image",
            copy_key(&CopyKeyInputs {
                source: SourceIdentity::Image { manifest },
                sources: &sources,
                ..copy_inputs(&parent, &files, &no_args)
            })
            .digest,
        ),
        (
            "add-url",
            copy_key(&CopyKeyInputs {
                keyword: "ADD",
                source: SourceIdentity::Url {
                    url: url_sources[0].clone(),
                },
                sources: &url_sources,
                checksum: Some("sha256:0000"),
                unpack: Some(false),
                ..copy_inputs(&parent, &url_files, &no_args)
            })
            .digest,
        ),
        ("workdir", workdir_key(&parent, "/app", None).digest),
        (
            "workdir-user",
            workdir_key(&parent, "/app", Some("node")).digest,
        ),
        (
            "run-shell",
            run_key(&RunKeyInputs {
                parent: &parent,
                command: &run_command,
                shell: Some(&shell),
                env: &env,
                args: &version,
                user: "node",
                workdir: "/app",
                mounts: &mounts,
                network: "default",
                security: "sandbox",
                text: "RUN npm ci",
            })
            .digest,
        ),
        ("metadata", metadata_key(&parent, "ENV A=1").digest),
        (
            "step-locator",
            StepLocator {
                context: "/src".to_owned(),
                dockerfile: "/src/Dockerfile".to_owned(),
                stage: 1,
                step: 2,
            }
            .id(),
        ),
    ];
    let content = Digest::of(b"hello\n");
    let file = fixed_entry("hello.txt", EntryKind::File, 0o100644, 6);
    let link = fixed_entry(
        "link",
        EntryKind::Symlink {
            target: "hello.txt".to_owned(),
        },
        0o120777,
        9,
    );
    let children = directory_digest(&mut [
        ("hello.txt", entry_digest(&file, Some(&content))),
        ("link", entry_digest(&link, None)),
    ]);
    let dir = fixed_entry("dir", EntryKind::Dir, 0o40755, 4096);
    keys.extend([
        ("entry-file", entry_digest(&file, Some(&content))),
        ("entry-symlink", entry_digest(&link, None)),
        ("directory-children", children),
        ("entry-directory", entry_digest(&dir, Some(&children))),
        ("directory-empty", directory_digest(&mut [])),
    ]);
    let actual: String = keys
        .iter()
        .map(|(name, digest)| format!("{name} {digest}\n"))
        .collect();
    if let Err(message) = check_golden(&fixtures_dir("cache").join("golden.txt"), &actual) {
        panic!("{message}");
    }
}

/// A stat cache kept in memory, as the store would keep it.
#[derive(Default)]
struct MemoryStorage(std::sync::Mutex<Option<Vec<u8>>>);

impl StatCacheStorage for MemoryStorage {
    fn load(&self) -> Option<Vec<u8>> {
        self.0.lock().ok()?.clone()
    }

    fn save(&self, bytes: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        *self.0.lock().map_err(|_| "poisoned")? = Some(bytes.to_vec());
        Ok(())
    }
}

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent directories");
    }
    fs::write(path, content).expect("write a context file");
}

fn set_mtime(path: &Path, seconds_later: u64) {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .expect("open to touch");
    file.set_modified(SystemTime::now() + Duration::from_secs(seconds_later))
        .expect("set the mtime");
}

fn listing(context: &Context) -> Vec<String> {
    context
        .entries()
        .iter()
        .map(|entry| {
            let kind = match &entry.kind {
                EntryKind::Dir => "dir".to_owned(),
                EntryKind::File => "file".to_owned(),
                EntryKind::Symlink { target } => format!("symlink->{target}"),
                EntryKind::Other => "other".to_owned(),
            };
            format!("{kind} {}", entry.path)
        })
        .collect()
}

fn hash_all(hasher: &ContentHasher, context: &Context) -> Vec<(String, Digest)> {
    let paths: Vec<&str> = context.entries().iter().map(|e| e.path.as_str()).collect();
    let mut digests = hasher.hash(context, &paths).expect("hashes");
    digests.extend(hasher.hash(context, &["."]).expect("hashes the root"));
    digests
}

#[test]
fn walks_and_hashes_a_context_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    write(root, "Dockerfile", "FROM scratch\nCOPY . /\n");
    write(root, ".dockerignore", "node_modules\n*.log\n!keep.log\n");
    write(root, "src/index.js", "console.log(1)\n");
    write(root, "src/lib/util.js", "export {}\n");
    write(root, "node_modules/dep/index.js", "x\n");
    write(root, "debug.log", "noise\n");
    write(root, "keep.log", "kept\n");
    fs::create_dir(root.join("empty")).expect("empty dir");
    std::os::unix::fs::symlink("src/index.js", root.join("entry")).expect("symlink");
    std::os::unix::fs::symlink("/nowhere", root.join("dangling")).expect("symlink");

    let patterns = read_dockerignore(root, Some(&root.join("Dockerfile"))).expect("reads");
    let context = walk(root, &patterns).expect("walks");
    assert_eq!(
        listing(&context),
        [
            "file .dockerignore",
            "file Dockerfile",
            "symlink->/nowhere dangling",
            "dir empty",
            "symlink->src/index.js entry",
            "file keep.log",
            "dir src",
            "file src/index.js",
            "dir src/lib",
            "file src/lib/util.js",
        ]
    );
    let under: Vec<&str> = context
        .under("src")
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(under, ["src/index.js", "src/lib", "src/lib/util.js"]);

    let storage = MemoryStorage::default();
    let first = ContentHasher::load(&storage);
    let digests = hash_all(&first, &context);
    assert_eq!(first.files_read(), 5, "every regular file read once");
    first.save(&context, &storage).expect("saves");

    // A no-change rebuild: a fresh walk and a hasher loaded from storage read nothing.
    let context = walk(root, &patterns).expect("walks again");
    let second = ContentHasher::load(&storage);
    assert_eq!(hash_all(&second, &context), digests);
    assert_eq!(second.files_read(), 0, "no-change rebuild reads no content");

    // Touching an mtime re-reads that file only, and changes no digest.
    set_mtime(&root.join("src/index.js"), 60);
    let context = walk(root, &patterns).expect("walks again");
    let third = ContentHasher::load(&storage);
    assert_eq!(hash_all(&third, &context), digests);
    assert_eq!(third.files_read(), 1);
    third.save(&context, &storage).expect("saves");

    // Editing a file changes its digest and its ancestors' only.
    write(root, "src/lib/util.js", "export { x }\n");
    let context = walk(root, &patterns).expect("walks again");
    let fourth = ContentHasher::load(&storage);
    let edited = hash_all(&fourth, &context);
    assert_eq!(fourth.files_read(), 1);
    let moved: Vec<&str> = digests
        .iter()
        .zip(&edited)
        .filter(|(old, new)| old.1 != new.1)
        .map(|(old, _)| old.0.as_str())
        .collect();
    assert_eq!(moved, ["src", "src/lib", "src/lib/util.js", "."]);

    // An excluded file changing touches nothing at all.
    write(root, "debug.log", "more noise\n");
    write(root, "node_modules/dep/index.js", "y\n");
    let context = walk(root, &patterns).expect("walks again");
    assert_eq!(hash_all(&fourth, &context), edited);
}

#[test]
fn copy_key_moves_with_content_mode_type_and_target_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    write(root, "app/main.sh", "echo hi\n");
    write(root, "app/other", "x\n");
    let parent = Digest::of(b"parent");
    let no_args = ArgValues::new();
    let key_now = || {
        let context = walk(root, &[]).expect("walks");
        let hasher = ContentHasher::new(Default::default());
        let files = hasher.hash(&context, &["app"]).expect("hashes");
        copy_key(&copy_inputs(&parent, &files, &no_args)).digest
    };
    let original = key_now();
    let main = root.join("app/main.sh");

    set_mtime(&main, 3600);
    assert_eq!(key_now(), original, "mtime does not enter the key");

    let with_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&main, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    with_mode(0o755);
    let executable = key_now();
    assert_ne!(executable, original, "mode enters the key");
    with_mode(0o644);
    assert_eq!(key_now(), original, "mode restored, key restored");

    // BuildKit keeps the COPY cached when only a directory's mode changes.
    let set_dir_mode = |mode| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("app"), fs::Permissions::from_mode(mode)).expect("chmod");
    };
    set_dir_mode(0o700);
    assert_eq!(
        key_now(),
        original,
        "a directory's mode does not enter the key"
    );
    set_dir_mode(0o755);

    write(root, "app/main.sh", "echo bye\n");
    assert_ne!(key_now(), original, "content enters the key");
    write(root, "app/main.sh", "echo hi\n");
    assert_eq!(key_now(), original);

    fs::remove_file(&main).expect("remove");
    std::os::unix::fs::symlink("other", &main).expect("symlink");
    let as_link = key_now();
    assert_ne!(as_link, original, "type enters the key");
    fs::remove_file(&main).expect("remove");
    std::os::unix::fs::symlink("elsewhere", &main).expect("symlink");
    assert_ne!(key_now(), as_link, "link target enters the key");

    // Owners cannot be changed without privileges here, so compare in-memory entries.
    let entry = |uid| Entry {
        uid,
        gid: uid,
        ..fixed_entry("f", EntryKind::File, 0o100644, 1)
    };
    let content = Digest::of(b"x");
    assert_eq!(
        entry_digest(&entry(0), Some(&content)),
        entry_digest(&entry(1000), Some(&content))
    );
}

/// Builds the conformance tree under `root`: directories and empty files.
fn make_tree(root: &Path, tree: &serde_json::Value) {
    for item in tree.as_array().expect("tree is a list") {
        let path = root.join(item["path"].as_str().expect("path"));
        if item["type"] == "dir" {
            fs::create_dir_all(&path).expect("create dir");
        } else {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create parent");
            }
            fs::write(&path, b"").expect("create file");
        }
    }
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The conformance context-walk cases, run as real trees on disk through the parallel walk.
#[test]
fn context_walk_on_disk() {
    let path = conformance_dir().join("dockerignore/context-walk.jsonl");
    let text = fs::read_to_string(&path).expect("conformance file is required");
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, row) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: serde_json::Value = serde_json::from_str(row).expect("JSON row");
        let Some(expected) = case.get("expect_walk") else {
            continue;
        };
        total += 1;
        let dir = tempfile::tempdir().expect("temp dir");
        make_tree(dir.path(), &case["tree"]);
        let filter = ContextFilter::new(&strings(&case["include"]), &strings(&case["exclude"]))
            .expect("valid patterns");
        let actual = walk_with(dir.path(), &filter).map(|context| listing(&context));
        let expected = strings(expected);
        if actual.as_ref().ok() != Some(&expected) {
            failures.push(format!(
                "line {}: expected {expected:?}, got {actual:?}",
                line + 1
            ));
        }
    }
    finish("dockerignore context-walk on disk", total, &failures);
}

/// BuildKit's `.dockerignore` build scenarios, checked on what the walk keeps (every
/// scenario is `COPY . .`, so the image holds exactly the kept files).
#[test]
fn buildkit_scenarios_on_disk() {
    let path = conformance_dir().join("dockerignore/buildkit-build-scenarios.jsonl");
    let text = fs::read_to_string(&path).expect("conformance file is required");
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, row) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        total += 1;
        let case: serde_json::Value = serde_json::from_str(row).expect("JSON row");
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in case["context"].as_object().expect("context map") {
            write(dir.path(), name, content.as_str().unwrap_or(""));
        }
        let dockerfile = dir
            .path()
            .join(case["build"]["dockerfile"].as_str().unwrap_or("Dockerfile"));
        let result = read_dockerignore(dir.path(), Some(&dockerfile))
            .map_err(|e| e.to_string())
            .and_then(|patterns| walk(dir.path(), &patterns).map_err(|e| e.to_string()));
        let success = case["expect_success"].as_bool().unwrap_or(true);
        match (result, success) {
            (Err(_), false) => {}
            (Ok(_), false) => failures.push(format!("line {}: expected a failure", line + 1)),
            (Err(error), true) => failures.push(format!("line {}: {error}", line + 1)),
            (Ok(context), true) => {
                let present: Vec<String> = case["expect_in_image"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for path in &present {
                    if context.get(path).is_none() {
                        failures.push(format!("line {}: {path} missing", line + 1));
                    }
                }
                for path in strings(&case["expect_not_in_image"]) {
                    if context.get(&path).is_some() {
                        failures.push(format!("line {}: {path} kept", line + 1));
                    }
                }
            }
        }
    }
    finish(
        "dockerignore buildkit-build-scenarios (context)",
        total,
        &failures,
    );
}
