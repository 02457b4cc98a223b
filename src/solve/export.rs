//! The last vertex: the target stage's config and manifest into the store, and its tags.
//!
//! Times follow BuildKit so that a rebuild with every step cached writes the very same image:
//! a layer's history entry carries the time its layer was first made (kept in the cache
//! record), a config-only entry the time of the next layer (of the last one when none
//! follows), and the image's `created` the time of its last layer.

use std::time::Instant;

use crate::image::{canonical_json, Descriptor, Manifest, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::solve::engine::{BuildError, BuildOutcome, Driver};
use crate::solve::events::Event;
use crate::solve::step::StageState;

/// Writes the image of `state` and tags it.
pub(crate) fn export(driver: &Driver<'_>, state: &StageState) -> Result<BuildOutcome, BuildError> {
    let store = driver.store;
    let vertex = driver.start("exporting to image".to_string());
    let started = Instant::now();
    let mut config = state.config.clone();
    config.rootfs.diff_ids = state.layers.iter().map(|layer| layer.diff_id).collect();
    fill_history_times(&mut config.history, &driver.now);
    config.created = config
        .history
        .iter()
        .rev()
        .find(|entry| !entry.empty_layer)
        .and_then(|entry| entry.created.clone())
        .or_else(|| Some(driver.now.clone()));
    driver.report(Event::Status {
        vertex,
        name: "exporting layers".to_string(),
        current: 0,
        total: None,
        completed: true,
    });
    let config_bytes = canonical_json(&config);
    let (config_digest, config_size) = store.put_blob(&config_bytes).map_err(BuildError::Store)?;
    let manifest = Manifest::new(
        Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config_size),
        state
            .layers
            .iter()
            .map(|layer| layer.blob.clone())
            .collect(),
    );
    let manifest_bytes = canonical_json(&manifest);
    let (manifest_digest, manifest_size) =
        store.put_blob(&manifest_bytes).map_err(BuildError::Store)?;
    let descriptor = Descriptor::new(MANIFEST_MEDIA_TYPE, manifest_digest, manifest_size);
    driver.report(Event::Status {
        vertex,
        name: format!("writing image {manifest_digest}"),
        current: 0,
        total: None,
        completed: true,
    });
    let mut tags = Vec::new();
    for tag in &driver.request.tags {
        store
            .tag(tag, &descriptor.to_oci())
            .map_err(BuildError::Store)?;
        driver.report(Event::Status {
            vertex,
            name: format!("naming to {tag}"),
            current: 0,
            total: None,
            completed: true,
        });
        tags.push(tag.to_string());
    }
    driver.done(vertex, started);
    Ok(BuildOutcome {
        manifest: descriptor,
        config: config_digest,
        tags,
        steps: driver.reports(),
    })
}

/// Gives every history entry without a time the time of the next layer entry, or of the
/// last layer entry when none follows, or `now` when there is no layer at all.
fn fill_history_times(history: &mut [crate::image::History], now: &str) {
    let mut next: Option<String> = None;
    let last = history
        .iter()
        .rev()
        .find(|entry| !entry.empty_layer)
        .and_then(|entry| entry.created.clone())
        .unwrap_or_else(|| now.to_string());
    for entry in history.iter_mut().rev() {
        if !entry.empty_layer {
            next = entry.created.clone().or_else(|| next.clone());
        }
        if entry.created.is_none() {
            entry.created = Some(next.clone().unwrap_or_else(|| last.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::History;

    fn entry(created: Option<&str>, empty_layer: bool) -> History {
        History {
            created: created.map(str::to_string),
            empty_layer,
            ..History::default()
        }
    }

    #[test]
    fn config_entries_take_the_next_layers_time_or_the_last() {
        let mut history = vec![
            entry(Some("t1"), false),
            entry(None, true),
            entry(Some("t2"), false),
            entry(None, true),
        ];
        fill_history_times(&mut history, "now");
        let times: Vec<_> = history.iter().map(|h| h.created.clone().unwrap()).collect();
        assert_eq!(times, ["t1", "t2", "t2", "t2"]);
        let mut only_config = vec![entry(None, true)];
        fill_history_times(&mut only_config, "now");
        assert_eq!(only_config[0].created.as_deref(), Some("now"));
    }
}
