//! The store across processes: concurrent taggers and blob writers lose nothing, a process
//! killed mid-write leaves a store the next open cleans and uses, corruption is detected.
//!
//! The child roles are tests of this binary marked `#[ignore]`, started by their parent
//! test through `std::env::current_exe()` with `--ignored --exact` and an environment
//! variable naming the store root; run directly they return at once.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kiln::digest::Digest;
use kiln::store::{LockMode, Reference, Store, StoreError};
use oci_spec::image::{Descriptor, MediaType};

const CHILD_ROOT: &str = "KILN_TEST_STORE_ROOT";
const CHILD_ID: &str = "KILN_TEST_STORE_WORKER";
const WORKERS: usize = 4;
const ROUNDS: usize = 25;

fn reference(text: &str) -> Reference {
    Reference::parse(text).expect("valid reference")
}

fn own_blob(worker: usize, round: usize) -> Vec<u8> {
    format!("worker {worker} round {round}").into_bytes()
}

/// Starts this test binary running only the ignored test `name`, with the store root set.
fn child(name: &str, root: &std::path::Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            name,
            "--exact",
            "--ignored",
            "--quiet",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ROOT, root);
    command
}

#[test]
#[ignore = "child of concurrent_processes_lose_nothing"]
fn store_worker_child() {
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let worker: usize = std::env::var(CHILD_ID)
        .expect("worker id")
        .parse()
        .expect("number");
    let store = Store::open(std::path::Path::new(&root)).expect("opens");
    let _build = store.lock_shared().expect("shared lock");
    for round in 0..ROUNDS {
        // Every worker writes the same shared blob: lock-free and idempotent.
        store
            .put_blob(format!("shared {round}").as_bytes())
            .expect("puts shared blob");
        let (digest, size) = store
            .put_blob(&own_blob(worker, round))
            .expect("puts own blob");
        let manifest = Descriptor::new(MediaType::ImageManifest, size, digest);
        store
            .tag(&reference(&format!("w{worker}:r{round}")), &manifest)
            .expect("tags");
        store
            .tag(&reference("contended"), &manifest)
            .expect("tags the contended name");
        store
            .put_record(
                "cache",
                &Digest::of(&own_blob(worker, round)),
                &[digest],
                &round,
            )
            .expect("records");
    }
}

#[test]
fn concurrent_processes_lose_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let children: Vec<_> = (0..WORKERS)
        .map(|worker| {
            child("store::store_worker_child", dir.path())
                .env(CHILD_ID, worker.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("child starts")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("child ends");
        assert!(
            output.status.success(),
            "worker failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let images = store.images().expect("lists");
    assert_eq!(
        images.len(),
        WORKERS * ROUNDS + 1,
        "one tag per worker and round, plus one"
    );
    for worker in 0..WORKERS {
        for round in 0..ROUNDS {
            let bytes = own_blob(worker, round);
            let found = store
                .resolve(&format!("w{worker}:r{round}"))
                .expect("tag kept");
            assert_eq!(found.digest, Digest::of(&bytes));
            assert_eq!(store.read_blob(&found.digest).expect("blob intact"), bytes);
        }
    }
    let contended: Vec<_> = images
        .iter()
        .filter(|i| i.name.as_ref().map(Reference::familiar).as_deref() == Some("contended:latest"))
        .collect();
    assert_eq!(contended.len(), 1, "re-tagging replaces");
    for round in 0..ROUNDS {
        let shared = format!("shared {round}");
        assert_eq!(
            store
                .read_blob(&Digest::of(shared.as_bytes()))
                .expect("intact"),
            shared.as_bytes()
        );
    }
    assert_eq!(
        store.records("cache").expect("lists").len(),
        WORKERS * ROUNDS
    );
    let leftovers = std::fs::read_dir(dir.path().join("kiln/tmp"))
        .expect("lists")
        .count();
    assert_eq!(leftovers, 0, "no temp files left behind");

    // Only the shared blobs are held by nothing.
    let summary = store.gc().expect("gc");
    assert_eq!(summary.blobs_removed, ROUNDS);
    assert_eq!(store.images().expect("lists").len(), WORKERS * ROUNDS + 1);
}

#[test]
#[ignore = "child of a_killed_process_leaves_a_usable_store"]
fn store_crash_child() {
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&root)).expect("opens");
    let _build = store.lock_shared().expect("shared lock");
    let mut writer = store.blob_writer().expect("blob writer");
    writer
        .write_all(&vec![7u8; 1 << 20])
        .expect("writes half a layer");
    writer.flush().expect("flushes");
    let snapshot = store.temp_dir().expect("temp dir");
    std::fs::create_dir_all(snapshot.path().join("usr/bin")).expect("mkdir");
    std::fs::write(snapshot.path().join("usr/bin/tool"), b"partial").expect("writes");
    println!("ready");
    std::io::stdout().flush().expect("flushes");
    // Wait to be killed: SIGKILL runs no destructor, like a crash or power loss.
    std::thread::sleep(std::time::Duration::from_secs(60));
    panic!("the parent should have killed this process");
}

#[test]
fn a_killed_process_leaves_a_usable_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let (kept, size) = store.put_blob(b"kept manifest").expect("puts");
    store
        .tag(
            &reference("kept"),
            &Descriptor::new(MediaType::ImageManifest, size, kept),
        )
        .expect("t");

    let mut crashing = child("store::store_crash_child", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts");
    // libtest prints its own "running 1 test" first; the child's "ready" follows its writes.
    let mut lines = BufReader::new(crashing.stdout.take().expect("piped")).lines();
    let ready = lines.any(|line| line.map(|l| l.contains("ready")).unwrap_or(false));
    assert!(ready, "the crash child never got ready");
    // The child holds the store lock shared, as a build does: gc would have to wait.
    assert!(store
        .try_lock(LockMode::Exclusive)
        .expect("tries")
        .is_none());
    drop(
        store
            .try_lock(LockMode::Shared)
            .expect("tries")
            .expect("shared with a build"),
    );
    crashing.kill().expect("kills the child");
    crashing.wait().expect("reaps the child");

    let tmp = dir.path().join("kiln/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).expect("lists").count(),
        2,
        "the crash left temp entries"
    );
    // A dead process's half-written index update, as a crash inside tag() would leave it.
    let dead = crashing.id();
    std::fs::write(
        tmp.join(format!("{dead}-index.part")),
        b"{\"schemaVersion\":2,\"manif",
    )
    .expect("writes");

    let store = Store::open(dir.path()).expect("opens after the crash");
    assert_eq!(
        std::fs::read_dir(&tmp).expect("lists").count(),
        0,
        "stale temp entries removed"
    );
    // The crashed child's shared lock died with it: gc can lock exclusively.
    store.gc().expect("gc runs");
    assert_eq!(store.resolve("kept").expect("tag survives").digest, kept);
    let (again, size) = store
        .put_blob(&vec![7u8; 1 << 20])
        .expect("writes the layer again");
    store
        .tag(
            &reference("after"),
            &Descriptor::new(MediaType::ImageManifest, size, again),
        )
        .expect("t");
    assert_eq!(store.images().expect("lists").len(), 2);
}

#[test]
fn corrupted_blobs_are_detected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("opens");
    let (digest, _) = store.put_blob(b"the real content").expect("puts");
    let path = store.blob_path(&digest);
    let table: &[&[u8]] = &[b"the fake content", b"the real", b""];
    for corrupt in table {
        std::fs::write(&path, corrupt).expect("corrupts the blob");
        match store.read_blob(&digest) {
            Err(StoreError::CorruptBlob {
                path: p,
                expected,
                found,
            }) => {
                assert_eq!(p, path);
                assert_eq!(expected, digest);
                assert_eq!(found, Digest::of(corrupt));
            }
            other => panic!("expected CorruptBlob, got {other:?}"),
        }
        let mut reader = store.open_blob(&digest).expect("opens");
        let error = std::io::Read::read_to_end(&mut reader, &mut Vec::new()).expect_err("detects");
        assert!(error.to_string().contains("is corrupt"), "{error}");
    }
    // Writing the same bytes again repairs it.
    store.put_blob(b"the real content").expect("puts again");
    assert_eq!(
        store.read_blob(&digest).expect("repaired"),
        b"the real content"
    );
}
