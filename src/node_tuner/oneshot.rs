//! `node-tuner apply` / `node-tuner restore`: one change without the Kubernetes API, the
//! originals kept in a state file. Used by the namespace tests and by hand on a node; the agent
//! runs the same [`plan`] with the originals kept on its Node.

use std::path::Path;

use anyhow::Context;

use super::plan::{Plan, plan};
use super::sysctl::{KeepaliveSysctls, SysctlRoot};

/// Sets `wanted`, recording the values found first (unless a record exists already).
pub fn apply(
    root: &SysctlRoot,
    state_file: &Path,
    wanted: KeepaliveSysctls,
) -> anyhow::Result<Plan> {
    run(root, state_file, Some(wanted))
}

/// Puts the recorded values back and deletes the record.
pub fn restore(root: &SysctlRoot, state_file: &Path) -> anyhow::Result<Plan> {
    run(root, state_file, None)
}

fn run(
    root: &SysctlRoot,
    state_file: &Path,
    wanted: Option<KeepaliveSysctls>,
) -> anyhow::Result<Plan> {
    let original = read_state(state_file)?;
    let current = root.read()?;
    let plan = plan(current, original, wanted);
    if let Some(original) = plan.original {
        let json = serde_json::to_string(&original)?;
        std::fs::write(state_file, json + "\n")
            .with_context(|| format!("cannot write the state file {}", state_file.display()))?;
    }
    if let Some(values) = plan.write {
        root.write(values)?;
    }
    if plan.original.is_none() && state_file.exists() {
        std::fs::remove_file(state_file)
            .with_context(|| format!("cannot remove the state file {}", state_file.display()))?;
    }
    Ok(plan)
}

fn read_state(state_file: &Path) -> anyhow::Result<Option<KeepaliveSysctls>> {
    match std::fs::read_to_string(state_file) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("the state file {} is not valid", state_file.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the state file {}", state_file.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_tuner::sysctl::tests::fake_root;

    const HOST: KeepaliveSysctls = KeepaliveSysctls {
        time: 600,
        intvl: 60,
        probes: 5,
    };
    const TUNED: KeepaliveSysctls = KeepaliveSysctls {
        time: 30,
        intvl: 5,
        probes: 4,
    };

    #[test]
    fn apply_twice_then_restore_gives_back_the_first_values() {
        let (dir, root) = fake_root(HOST);
        let state = dir.path().join("state.json");
        apply(&root, &state, TUNED).unwrap();
        assert_eq!(root.read().unwrap(), TUNED);
        // A second apply with other values must not record the tuned ones as originals.
        let smaller = KeepaliveSysctls { time: 20, ..TUNED };
        apply(&root, &state, smaller).unwrap();
        assert_eq!(root.read().unwrap(), smaller);
        restore(&root, &state).unwrap();
        assert_eq!(root.read().unwrap(), HOST);
        assert!(!state.exists());
        // Restoring again is harmless.
        assert_eq!(
            restore(&root, &state).unwrap(),
            Plan {
                original: None,
                write: None
            }
        );
        assert_eq!(root.read().unwrap(), HOST);
    }

    #[test]
    fn a_hand_change_is_reverted_by_the_next_apply() {
        let (dir, root) = fake_root(HOST);
        let state = dir.path().join("state.json");
        apply(&root, &state, TUNED).unwrap();
        root.write(KeepaliveSysctls::KERNEL_DEFAULTS).unwrap();
        let plan = apply(&root, &state, TUNED).unwrap();
        assert_eq!(plan.write, Some(TUNED));
        assert_eq!(root.read().unwrap(), TUNED);
        restore(&root, &state).unwrap();
        assert_eq!(root.read().unwrap(), HOST);
    }

    #[test]
    fn a_corrupt_state_file_stops_before_touching_the_kernel() {
        let (dir, root) = fake_root(HOST);
        let state = dir.path().join("state.json");
        std::fs::write(&state, "garbage").unwrap();
        let err = format!("{:#}", apply(&root, &state, TUNED).unwrap_err());
        assert!(err.contains("is not valid"), "{err}");
        assert_eq!(root.read().unwrap(), HOST);
    }
}
