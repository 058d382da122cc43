//! The container requests of the agent protocol: create, start, state,
//! list, exec, freeze, thaw, kill and delete.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::Duration;

use crvmm_protocol::{
    ContainerCreate, ContainerExec, ContainerInfo, ContainerKill, ContainerStatus, ExecOutput,
};

use super::cgroup::{Cgroup, Limits, CGROUP_ROOT};
// The module only: this file defines the request function `create`.
use super::create::{self};
use super::exec::Entry;
use super::spec::Config;
use super::{
    adopt, checkpoint, spec, Container, ContainerError, Lifecycle, Registry, CGROUP_EMPTY_WAIT,
    DEFAULT_FREEZE_TIMEOUT, EXIT_WAIT, STATE_DIR,
};

/// The agent's directory and the cgroup of a new container, created or
/// restored, with `spec` as given saved in the directory for the manifest
/// of a later checkpoint. Nothing is left when it fails.
pub(crate) fn prepare(
    id: &str,
    spec: &serde_json::Value,
    config: &Config,
) -> Result<(PathBuf, Cgroup), ContainerError> {
    let state_dir = Path::new(STATE_DIR).join(id);
    std::fs::create_dir_all(&state_dir).map_err(|source| ContainerError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let spec_path = state_dir.join(checkpoint::SPEC_FILE);
    if let Err(source) = std::fs::write(&spec_path, spec.to_string()) {
        let _ = std::fs::remove_dir_all(&state_dir);
        return Err(ContainerError::StateDir {
            path: spec_path,
            source,
        });
    }
    let limits = Limits {
        memory: config.memory_limit,
        pids: config.pids_limit,
    };
    match Cgroup::create(Path::new(CGROUP_ROOT), id, limits) {
        Ok(cgroup) => Ok((state_dir, cgroup)),
        Err(source) => {
            let _ = std::fs::remove_dir_all(&state_dir);
            Err(ContainerError::Cgroup {
                op: "create",
                id: id.to_owned(),
                source,
            })
        }
    }
}

/// `container_create`.
pub fn create(
    registry: &Registry,
    request: ContainerCreate,
) -> Result<ContainerInfo, ContainerError> {
    let id = request.container;
    let reservation = registry.reserve(&id)?;
    let (spec, config) = spec::parse(&request.spec).map_err(|source| ContainerError::Spec {
        id: id.clone(),
        source,
    })?;
    let (state_dir, cgroup) = prepare(&id, &request.spec, &config)?;
    let spawned = match create::spawn(&config, &cgroup, &state_dir.join("init.log")) {
        Ok(spawned) => spawned,
        Err(source) => {
            let _ = cgroup.remove(CGROUP_EMPTY_WAIT);
            let _ = std::fs::remove_dir_all(&state_dir);
            return Err(ContainerError::Create {
                op: "create",
                id,
                source,
            });
        }
    };
    let lifecycle = Lifecycle {
        gate: Some(spawned.gate),
        ..Lifecycle::default()
    };
    let container = adopt(
        "create",
        Container::new(
            id.clone(),
            spec,
            config,
            cgroup,
            spawned.pid,
            spawned.pidfd,
            state_dir,
            lifecycle,
        ),
    )?;
    reservation.commit(container.clone());
    log!("container {id}: created, init pid {}", container.init);
    if request.start {
        if let Err(e) = start_locked(&container, container.lock()) {
            // A create that asked to start either runs or leaves nothing.
            let _ = delete(registry, &id, true);
            return Err(e);
        }
    }
    let lifecycle = container.lock();
    Ok(container.info(&lifecycle))
}

/// `container_start`.
pub fn start(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = start_locked(&container, container.lock())?;
    Ok(container.info(&lifecycle))
}

fn start_locked<'a>(
    container: &'a Container,
    mut lifecycle: MutexGuard<'a, Lifecycle>,
) -> Result<MutexGuard<'a, Lifecycle>, ContainerError> {
    let id = &container.id;
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.clone(),
            status: container.status_words(&lifecycle),
            op: "start",
        });
    }
    let Some(gate) = lifecycle.gate.take() else {
        return Err(ContainerError::AlreadyStarted(id.clone()));
    };
    gate.release(&container.config.args[0])
        .map_err(|source| ContainerError::Create {
            op: "start",
            id: id.clone(),
            source,
        })?;
    lifecycle.started = true;
    log!("container {id}: started {:?}", container.config.args);
    Ok(lifecycle)
}

/// `container_state`.
pub fn state(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    Ok(container.info(&lifecycle))
}

/// `container_list`.
pub fn list(registry: &Registry) -> Vec<ContainerInfo> {
    registry.list().iter().map(|c| c.info(&c.lock())).collect()
}

/// `container_exec`.
pub fn exec(
    registry: &Registry,
    request: ContainerExec,
    cap: usize,
) -> Result<ExecOutput, ContainerError> {
    let container = registry.get(&request.container)?;
    let id = &container.id;
    let entry = {
        let lifecycle = container.lock();
        if lifecycle.exit.is_some() {
            return Err(ContainerError::Stopped {
                id: id.clone(),
                status: container.status_words(&lifecycle),
                op: "exec",
            });
        }
        if container.cgroup.is_frozen() {
            return Err(ContainerError::Frozen {
                id: id.clone(),
                op: "exec",
            });
        }
        let exec_error = |source| ContainerError::Exec {
            id: id.clone(),
            source,
        };
        let entry = Entry::open(container.init, &container.config, &container.cgroup)
            .map_err(exec_error)?;
        // The PID was still the init's when the files were opened if the
        // init is still not reaped now.
        if container.signal_init(0).is_err() {
            return Err(ContainerError::Stopped {
                id: id.clone(),
                status: "stopped".into(),
                op: "exec",
            });
        }
        entry
    };
    entry
        .run(request.exec, cap)
        .map_err(|source| ContainerError::Exec {
            id: id.clone(),
            source,
        })
}

/// `container_freeze`.
pub fn freeze(
    registry: &Registry,
    id: &str,
    timeout_ms: Option<u64>,
) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.to_owned(),
            status: container.status_words(&lifecycle),
            op: "freeze",
        });
    }
    let timeout = timeout_ms.map_or(DEFAULT_FREEZE_TIMEOUT, Duration::from_millis);
    container
        .cgroup
        .freeze(timeout)
        .map_err(|source| ContainerError::Cgroup {
            op: "freeze",
            id: id.to_owned(),
            source,
        })?;
    Ok(container.info(&lifecycle))
}

/// `container_thaw`.
pub fn thaw(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    container
        .cgroup
        .thaw()
        .map_err(|source| ContainerError::Cgroup {
            op: "thaw",
            id: id.to_owned(),
            source,
        })?;
    Ok(container.info(&lifecycle))
}

/// `container_kill`: the signal (default SIGKILL) goes to the init, or
/// with `all` to every process of the cgroup. After SIGKILL it waits for
/// the init's exit, so the answer reports it.
pub fn kill(registry: &Registry, request: ContainerKill) -> Result<ContainerInfo, ContainerError> {
    let signal = request.signal.unwrap_or(libc::SIGKILL);
    if !(1..=64).contains(&signal) {
        return Err(ContainerError::BadSignal(signal));
    }
    let container = registry.get(&request.container)?;
    let id = &container.id;
    let lifecycle = container.lock();
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.clone(),
            status: container.status_words(&lifecycle),
            op: "kill",
        });
    }
    let signal_error = |source| ContainerError::Signal {
        id: id.clone(),
        source,
    };
    if !request.all {
        container.signal_init(signal).map_err(signal_error)?;
    } else if signal == libc::SIGKILL {
        container
            .cgroup
            .kill()
            .map_err(|source| ContainerError::Cgroup {
                op: "kill",
                id: id.clone(),
                source,
            })?;
    } else {
        let pids = container
            .processes()
            .map_err(|source| ContainerError::Cgroup {
                op: "kill",
                id: id.clone(),
                source,
            })?;
        for pid in pids {
            // SAFETY: kill takes two integers and touches no memory.
            if unsafe { libc::kill(pid as i32, signal) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(signal_error(e));
                }
            }
        }
    }
    if signal != libc::SIGKILL {
        return Ok(container.info(&lifecycle));
    }
    let (lifecycle, exited) = container.wait_exit(lifecycle, EXIT_WAIT);
    if !exited {
        return Err(ContainerError::ExitTimeout {
            id: id.clone(),
            secs: EXIT_WAIT.as_secs(),
        });
    }
    Ok(container.info(&lifecycle))
}

/// `container_delete`: a stopped or never started container goes at once;
/// a running or frozen one only with `force` (SIGKILL to its cgroup).
pub fn delete(registry: &Registry, id: &str, force: bool) -> Result<(), ContainerError> {
    let container = registry.get(id)?;
    let mut lifecycle = container.lock();
    if lifecycle.exit.is_none() {
        let status = container.status(&lifecycle);
        if status != ContainerStatus::Created && !force {
            return Err(ContainerError::StillRunning {
                id: id.to_owned(),
                status,
            });
        }
        // Dropping the gate ends a created init; the cgroup kill ends the
        // rest, frozen or not.
        lifecycle.gate = None;
        container
            .cgroup
            .kill()
            .map_err(|source| ContainerError::Cgroup {
                op: "delete",
                id: id.to_owned(),
                source,
            })?;
        let exited;
        (lifecycle, exited) = container.wait_exit(lifecycle, EXIT_WAIT);
        if !exited {
            return Err(ContainerError::ExitTimeout {
                id: id.to_owned(),
                secs: EXIT_WAIT.as_secs(),
            });
        }
    }
    container
        .cgroup
        .remove(CGROUP_EMPTY_WAIT)
        .map_err(|source| ContainerError::Cgroup {
            op: "delete",
            id: id.to_owned(),
            source,
        })?;
    if let Err(e) = std::fs::remove_dir_all(&container.state_dir) {
        if e.kind() != io::ErrorKind::NotFound {
            log!(
                "container {id}: cannot remove {}: {e}",
                container.state_dir.display()
            );
        }
    }
    registry.remove(id);
    drop(lifecycle);
    log!("container {id}: deleted");
    Ok(())
}
