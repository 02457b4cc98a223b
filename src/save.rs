//! `kiln save` and `kiln build -o`: the command-line side of [`kiln::export`].
//!
//! Opens the destination (a file written under a temp name and renamed into place when
//! complete, standard output, or a directory), calls the library and reports.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use crate::cli::{CompressionArg, CompressionArgs, SaveArgs, SaveFormat};
use crate::{open_store, Failure};
use kiln::digest::Digest;
use kiln::export::{
    self, Algorithm, ArchiveFormat, Compression, Destination, OutputKind, OutputSpec, SaveImage,
};
use kiln::store::{Reference, Store};

/// `kiln save IMAGE... -o FILE`.
pub(crate) fn save_command(args: &SaveArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let mut images: Vec<SaveImage> = Vec::new();
    let tagged = store.images()?;
    for text in &args.images {
        let resolved = store.resolve(text)?;
        // Only a tag the image has names it in the archive; an image given by ID or digest
        // is saved untagged, as docker does.
        let names: Vec<Reference> = Reference::parse(text)
            .ok()
            .filter(|name| {
                tagged.iter().any(|record| {
                    record.digest == resolved.digest && record.name.as_ref() == Some(name)
                })
            })
            .into_iter()
            .collect();
        match images.iter_mut().find(|i| i.manifest == resolved.digest) {
            Some(image) => image.names.extend(names),
            None => images.push(SaveImage {
                manifest: resolved.digest,
                names,
            }),
        }
    }
    let format = match args.format {
        SaveFormat::Oci => ArchiveFormat::Oci,
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::OciDir => ArchiveFormat::OciDir,
    };
    let compression = compression(&args.compression, None, None);
    let dest = match &args.output {
        Some(path) => path.clone(),
        None if format == ArchiveFormat::OciDir => {
            return Err(hinted(
                "--format oci-dir needs a directory",
                "give it with -o DIR",
            ))
        }
        None if std::io::stdout().is_terminal() => {
            return Err(hinted(
                "refusing to write an archive to a terminal",
                "give a file with -o FILE, or redirect standard output",
            ))
        }
        None => "-".into(),
    };
    match format {
        ArchiveFormat::OciDir => {
            export::save(
                &store,
                &images,
                format,
                compression,
                Destination::Dir(&dest),
            )
            .with_context(|| format!("cannot save to {}", dest.display()))?;
        }
        _ => write_to(&dest, |out| {
            export::save(
                &store,
                &images,
                format,
                compression,
                Destination::Tar { out, path: &dest },
            )
            .map(drop)
        })?,
    }
    Ok(())
}

/// `kiln build -o SPEC` after the build: writes image `manifest` (named `tags` and the
/// spec's `name=` values) as the spec asks.
pub(crate) fn build_output(
    store: &Store,
    manifest: &Digest,
    tags: &[Reference],
    spec: &OutputSpec,
    flags: &CompressionArgs,
) -> Result<(), Failure> {
    let dest = spec.dest.as_path();
    match spec.kind {
        OutputKind::Local => {
            export::write_rootfs_dir(store, manifest, dest).with_context(|| {
                format!("cannot write the root filesystem to {}", dest.display())
            })?;
        }
        OutputKind::Tar => write_to(dest, |out| {
            export::write_rootfs_tar(store, manifest, out).map(drop)
        })?,
        OutputKind::Oci | OutputKind::Docker => {
            let mut names = tags.to_vec();
            for name in &spec.names {
                names.push(Reference::parse(name).map_err(|error| Failure::Hinted {
                    message: format!("invalid name={name} in -o: {error}"),
                    hint: Some("use NAME[:TAG]".into()),
                })?);
            }
            let format = match spec.kind {
                OutputKind::Docker => ArchiveFormat::Docker,
                _ => ArchiveFormat::Oci,
            };
            let image = SaveImage {
                manifest: *manifest,
                names,
            };
            let compression = compression(flags, spec.compression, spec.level);
            write_to(dest, |out| {
                export::save(
                    store,
                    std::slice::from_ref(&image),
                    format,
                    compression,
                    Destination::Tar { out, path: dest },
                )
                .map(drop)
            })?;
        }
    }
    Ok(())
}

/// The compression asked for: the `-o` value's fields win over the flags, as BuildKit's
/// exporter attributes are the only place it takes them.
fn compression(
    flags: &CompressionArgs,
    algorithm: Option<Algorithm>,
    level: Option<i32>,
) -> Compression {
    let from_flag = flags.compression.map(|arg| match arg {
        CompressionArg::Gzip => Algorithm::Gzip,
        CompressionArg::Zstd => Algorithm::Zstd,
        CompressionArg::None => Algorithm::None,
    });
    Compression {
        algorithm: algorithm.or(from_flag).unwrap_or(Algorithm::Gzip),
        level: level.or(flags.compression_level),
    }
}

fn hinted(message: &str, hint: &str) -> Failure {
    Failure::Hinted {
        message: message.to_string(),
        hint: Some(hint.to_string()),
    }
}

/// Runs `write` on standard output (`-`) or on a temp file beside `dest` that becomes `dest`
/// only when `write` succeeds, so a failed export leaves no partial file.
fn write_to(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), export::ExportError>,
) -> Result<(), Failure> {
    // Large buffers: layer blobs then move a megabyte per read and write.
    if dest.as_os_str() == "-" {
        let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        write(&mut stdout).context("cannot write to standard output")?;
        stdout.flush().context("cannot write to standard output")?;
        return Ok(());
    }
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".kiln-save-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, temp.as_file_mut());
    write(&mut out).with_context(|| format!("cannot write {}", dest.display()))?;
    out.flush()
        .with_context(|| format!("cannot write {}", dest.display()))?;
    drop(out);
    // A temp file is private (0600); the archive is an ordinary file.
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("cannot write {}", dest.display()))?;
    temp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}
