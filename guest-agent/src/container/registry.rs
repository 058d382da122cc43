//! The [`Registry`] of containers by identifier, the [`Reservation`] that
//! claims an identifier while its container is being made, and the check
//! of identifiers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crvmm_protocol::MAX_CONTAINER_ID_LEN;

use super::{Container, ContainerError};

/// Every container of the agent, by identifier.
pub struct Registry {
    /// `None` while a container of that name is being created.
    entries: Mutex<BTreeMap<String, Option<Arc<Container>>>>,
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Registry {
        Registry {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The agent's registry.
    pub fn global() -> &'static Registry {
        static REGISTRY: Registry = Registry::new();
        &REGISTRY
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Option<Arc<Container>>>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` for a container about to be created (or restored).
    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
        check_id(id)?;
        let mut entries = self.entries();
        if entries.contains_key(id) {
            return Err(ContainerError::Duplicate(id.to_owned()));
        }
        entries.insert(id.to_owned(), None);
        Ok(Reservation {
            registry: self,
            id: id.to_owned(),
            committed: false,
        })
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        let entries = self.entries();
        match entries.get(id) {
            Some(Some(container)) => Ok(container.clone()),
            _ => Err(ContainerError::NotFound {
                id: id.to_owned(),
                known: entries
                    .iter()
                    .filter(|(_, c)| c.is_some())
                    .map(|(id, _)| id.clone())
                    .collect(),
            }),
        }
    }

    /// Every container, sorted by identifier.
    pub fn list(&self) -> Vec<Arc<Container>> {
        self.entries().values().flatten().cloned().collect()
    }

    pub(super) fn remove(&self, id: &str) {
        self.entries().remove(id);
    }
}

/// A claimed identifier; released again unless committed.
pub struct Reservation<'a> {
    registry: &'a Registry,
    id: String,
    committed: bool,
}

impl Reservation<'_> {
    /// Publishes the container under the reserved identifier.
    pub fn commit(mut self, container: Arc<Container>) {
        self.registry
            .entries()
            .insert(self.id.clone(), Some(container));
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.registry.remove(&self.id);
        }
    }
}

fn check_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CONTAINER_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::BadId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use crvmm_protocol::ErrorKind;

    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["a", "web-1", "A.b_c", &"x".repeat(64)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(check_id(bad), Err(ContainerError::BadId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn reservations_claim_and_release_ids() {
        let registry = Registry::new();
        let first = registry.reserve("c1").unwrap();
        assert!(matches!(
            registry.reserve("c1"),
            Err(ContainerError::Duplicate(_))
        ));
        // Being created is not visible yet.
        assert!(registry.list().is_empty());
        let err = registry.get("c1").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "no container \"c1\" (existing: none)");
        drop(first);
        assert!(registry.reserve("c1").is_ok());
        assert!(matches!(
            registry.reserve("bad id"),
            Err(ContainerError::BadId(_))
        ));
    }
}
