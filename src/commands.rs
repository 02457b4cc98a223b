//! The commands that look into the store: `images`, `inspect`, `history`, `tag`, `rmi` and
//! `cache ls|du|prune`. Each reads through the library and prints; tables follow docker's
//! column names.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::cli::{CacheCommand, ImageArgs, LogsArgs, PruneArgs, RmiArgs, StoreArgs, TagArgs};
use crate::{open_store, Failure};
use kiln::cache::index::{CacheRecord, CACHE_KIND, LOG_KIND};
use kiln::digest::Digest;
use kiln::image::{ImageConfig, Manifest};
use kiln::progress::human_size;
use kiln::store::{PruneOptions, Reference, Store};
use kiln::syntax::instruction::values::parse_size;

/// A manifest and config read from the store.
struct Image {
    digest: Digest,
    manifest: Manifest,
    config: ImageConfig,
}

fn read_image(store: &Store, digest: &Digest) -> anyhow::Result<Image> {
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(digest)?)
        .with_context(|| format!("manifest {digest} does not parse"))?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .with_context(|| format!("config {} does not parse", manifest.config.digest))?;
    Ok(Image {
        digest: *digest,
        manifest,
        config,
    })
}

fn resolve(store: &Store, text: &str) -> anyhow::Result<Image> {
    let resolved = store.resolve(text)?;
    read_image(store, &resolved.digest)
}

pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}

/// Columns padded to their widest cell, separated by three spaces (docker's tables).
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if column + 1 < row.len() {
                let pad = widths[column] - cell.chars().count() + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// "5 minutes ago", as docker prints ages.
pub(crate) fn ago(time: SystemTime) -> String {
    let Ok(age) = SystemTime::now().duration_since(time) else {
        return "Less than a second ago".to_string();
    };
    let secs = age.as_secs();
    let (count, unit) = match secs {
        0 => return "Less than a second ago".to_string(),
        1..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        86_400..=1_209_599 => (secs / 86_400, "day"),
        1_209_600..=5_183_999 => (secs / 604_800, "week"),
        5_184_000..=63_071_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    match count {
        1 if unit == "hour" => "About an hour ago".to_string(),
        1 => format!("1 {unit} ago"),
        count => format!("{count} {unit}s ago"),
    }
}

fn created(config: &ImageConfig) -> String {
    config
        .created
        .as_deref()
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
        .map_or_else(|| "N/A".to_string(), ago)
}

/// `kiln images`.
pub(crate) fn images(args: &StoreArgs) -> Result<(), Failure> {
    let store = open_store(&args.root)?;
    let mut rows = vec![vec![
        "REPOSITORY".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "CREATED".to_string(),
        "SIZE".to_string(),
    ]];
    for record in store.images().context("cannot list images")? {
        let image = read_image(&store, &record.digest)?;
        let size: u64 = image.manifest.layers.iter().map(|layer| layer.size).sum();
        let (repository, tag) = match &record.name {
            Some(name) => (
                name.familiar_name(),
                name.tag().unwrap_or("<none>").to_string(),
            ),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        rows.push(vec![
            repository,
            tag,
            image.digest.short(),
            created(&image.config),
            human_size(size),
        ]);
    }
    print(&table(&rows))?;
    Ok(())
}

/// `kiln inspect`: docker's array of one object, with the manifest beside the config.
pub(crate) fn inspect(args: &ImageArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let image = resolve(&store, &args.image)?;
    let tags: Vec<String> = store
        .images()?
        .into_iter()
        .filter(|record| record.digest == image.digest)
        .filter_map(|record| record.name.map(|name| name.familiar()))
        .collect();
    let document = serde_json::json!([{
        "Id": image.digest,
        "RepoTags": tags,
        "ConfigDigest": image.manifest.config.digest,
        "Size": image.manifest.layers.iter().map(|layer| layer.size).sum::<u64>(),
        "Manifest": image.manifest,
        "Config": image.config,
    }]);
    let mut text = serde_json::to_string_pretty(&document).context("cannot encode")?;
    text.push('\n');
    print(&text)?;
    Ok(())
}

/// `kiln history`: newest first, each layer with the cache key that made it.
pub(crate) fn history(args: &ImageArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let image = resolve(&store, &args.image)?;
    let keys = keys_by_layer(&store)?;
    let mut layers = image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids);
    let mut rows = Vec::new();
    for entry in &image.config.history {
        let (size, key) = match entry.empty_layer {
            true => ("0B".to_string(), String::new()),
            false => match layers.next() {
                Some((blob, diff_id)) => (
                    human_size(blob.size),
                    keys.get(diff_id)
                        .map_or_else(String::new, |key| match args.no_trunc {
                            true => key.to_string(),
                            false => key.short(),
                        }),
                ),
                None => ("?".to_string(), String::new()),
            },
        };
        let mut created_by = entry.created_by.clone().unwrap_or_default();
        if !args.no_trunc && created_by.chars().count() > 45 {
            created_by = created_by.chars().take(44).collect::<String>() + "…";
        }
        let created = entry
            .created
            .as_deref()
            .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
            .map_or_else(|| "N/A".to_string(), ago);
        rows.push(vec![
            created,
            created_by,
            size,
            key,
            entry.comment.clone().unwrap_or_default(),
        ]);
    }
    rows.reverse();
    rows.insert(
        0,
        ["CREATED", "CREATED BY", "SIZE", "CACHE KEY", "COMMENT"]
            .map(String::from)
            .to_vec(),
    );
    let mut text = format!("IMAGE {}\n", image.digest);
    text.push_str(&table(&rows));
    print(&text)?;
    Ok(())
}

/// The cache key that made each layer, from the cache records.
fn keys_by_layer(store: &Store) -> anyhow::Result<BTreeMap<Digest, Digest>> {
    let mut keys = BTreeMap::new();
    for info in store.records(CACHE_KIND)? {
        if let Some(record) = store.get_record::<CacheRecord>(CACHE_KIND, &info.id)? {
            if let Some(layer) = record.layer {
                keys.insert(layer.diff_id, record.key);
            }
        }
    }
    Ok(keys)
}

/// `kiln tag SOURCE TARGET`.
pub(crate) fn tag(args: &TagArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let target = Reference::parse(&args.target).map_err(|error| Failure::Hinted {
        message: format!("invalid name '{}': {error}", args.target),
        hint: Some("use NAME[:TAG]".to_string()),
    })?;
    let resolved = store
        .resolve(&args.source)
        .with_context(|| format!("no such image: {}", args.source))?;
    store
        .tag(&target, &resolved.manifest)
        .with_context(|| format!("cannot tag {target}"))?;
    Ok(())
}

/// `kiln rmi`: removes names, then whatever nothing holds any more.
pub(crate) fn rmi(args: &RmiArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let mut out = String::new();
    for name in &args.images {
        let reference = Reference::parse(name).map_err(|error| Failure::Hinted {
            message: format!("invalid name '{name}': {error}"),
            hint: Some("give a NAME[:TAG] as `kiln images` lists it".to_string()),
        })?;
        if !store.untag(&reference)? {
            return Err(Failure::Other(anyhow::anyhow!("no such image: {name}")));
        }
        out.push_str(&format!("Untagged: {}\n", reference.familiar()));
    }
    let _lock = store.lock_exclusive()?;
    let freed = store.gc()?;
    if freed.blobs_removed > 0 {
        out.push_str(&format!(
            "Deleted: {} blobs, {} snapshots ({})\n",
            freed.blobs_removed,
            freed.snapshots_removed,
            human_size(freed.bytes_freed)
        ));
    }
    print(&out)?;
    Ok(())
}

/// `kiln cache ls|du|prune`.
pub(crate) fn cache(command: &CacheCommand) -> Result<(), Failure> {
    match command {
        CacheCommand::Ls(args) => cache_ls(args),
        CacheCommand::Du(args) => cache_du(args),
        CacheCommand::Prune(args) => cache_prune(args),
    }
}

fn cache_ls(args: &StoreArgs) -> Result<(), Failure> {
    let store = open_store(&args.root)?;
    let mut rows = vec![["KEY", "SIZE", "LAST USED", "STEP"]
        .map(String::from)
        .to_vec()];
    let mut usage = store.record_usage(CACHE_KIND)?;
    usage.sort_by_key(|(info, _)| std::cmp::Reverse(info.last_used));
    for (info, bytes) in usage {
        let text = store
            .get_record::<CacheRecord>(CACHE_KIND, &info.id)?
            .map(|record| record.text)
            .unwrap_or_default();
        rows.push(vec![
            info.id.short(),
            human_size(bytes),
            ago(info.last_used),
            text,
        ]);
    }
    print(&table(&rows))?;
    Ok(())
}

fn cache_du(args: &StoreArgs) -> Result<(), Failure> {
    let store = open_store(&args.root)?;
    let usage = store.disk_usage()?;
    let cache: u64 = store
        .record_usage(CACHE_KIND)?
        .iter()
        .map(|(_, bytes)| bytes)
        .sum();
    let rows = vec![
        vec!["TYPE".to_string(), "COUNT".to_string(), "SIZE".to_string()],
        vec![
            "blobs".to_string(),
            usage.blob_count.to_string(),
            human_size(usage.blob_bytes),
        ],
        vec![
            "snapshots".to_string(),
            usage.snapshot_count.to_string(),
            human_size(usage.snapshot_bytes),
        ],
        vec![
            "records".to_string(),
            usage.record_count.to_string(),
            human_size(usage.record_bytes),
        ],
    ];
    let mut text = table(&rows);
    text.push_str(&format!(
        "Reclaimable by `kiln cache prune`: {}\nUnreferenced now: {}\n",
        human_size(cache),
        human_size(usage.unreferenced_bytes)
    ));
    print(&text)?;
    Ok(())
}

fn cache_prune(args: &PruneArgs) -> Result<(), Failure> {
    let mut options = PruneOptions::default();
    if let Some(size) = &args.keep_storage {
        options.keep_bytes = Some(parse_size(size).ok_or_else(|| Failure::Hinted {
            message: format!("invalid --keep-storage '{size}'"),
            hint: Some("give a size such as 500MB or 2GB".to_string()),
        })?);
    }
    for filter in &args.filter {
        let duration = filter
            .strip_prefix("until=")
            .and_then(|text| humantime::parse_duration(text).ok())
            .ok_or_else(|| Failure::Hinted {
                message: format!("invalid --filter '{filter}'"),
                hint: Some("the supported filter is until=DURATION, e.g. until=24h".to_string()),
            })?;
        options.older_than = Some(duration.max(Duration::ZERO));
    }
    let store = open_store(&args.store.root)?;
    let _lock = store.lock_exclusive()?;
    let summary = store.prune(CACHE_KIND, &options)?;
    // The compressed layers exports made are a cache too (remade on the next export).
    let exported = store.prune(kiln::export::compress::RECORD_KIND, &options)?;
    print(&format!(
        "Deleted {} cache entries\nTotal reclaimed space: {}\n",
        summary.records_removed + exported.records_removed,
        human_size(summary.gc.bytes_freed + exported.gc.bytes_freed)
    ))?;
    Ok(())
}

/// `kiln logs KEY`: the whole output of the RUN step with that cache key.
pub(crate) fn logs(args: &LogsArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let wanted = args.key.trim_start_matches("sha256:");
    let matches: Vec<Digest> = store
        .records(LOG_KIND)?
        .into_iter()
        .map(|info| info.id)
        .filter(|id| id.hex().starts_with(wanted))
        .collect();
    let key = match matches.as_slice() {
        [key] => key,
        [] => {
            return Err(Failure::Hinted {
                message: format!("no RUN log for the key {}", args.key),
                hint: Some("`kiln history IMAGE --no-trunc` shows each layer's cache key".into()),
            })
        }
        _ => {
            return Err(Failure::Hinted {
                message: format!("the key prefix {} is ambiguous", args.key),
                hint: Some("give more digits".into()),
            })
        }
    };
    let log: Digest = store
        .get_record(LOG_KIND, key)?
        .ok_or_else(|| anyhow::anyhow!("the log record of {key} vanished"))?;
    let mut text = String::from_utf8_lossy(&store.read_blob(&log)?).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    print(&text)?;
    Ok(())
}
