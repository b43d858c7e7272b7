//! The keys secrets are sealed with: the master key from configuration, and each
//! organization's data key, stored wrapped by it and kept unwrapped in memory once used.
//!
//! Why a data key per organization: a leaked data key exposes one tenant, and rotating the
//! master key re-wraps a few small keys instead of re-encrypting every secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slipway_proto::ApiError;

use crate::secrets::{self, DataKey, MasterKey, SecretsError, WrappedDataKey};
use crate::store::{Kind, Store};

/// Seals and opens secrets of any organization. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    master: Arc<MasterKey>,
    store: Store,
    unwrapped: Arc<Mutex<HashMap<String, DataKey>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// A key that cannot be used: a wrong master key in configuration, or a corrupt row.
/// Never shown to clients beyond "internal".
#[derive(Debug, thiserror::Error)]
#[error("secrets of organization {organization_id}: {source}")]
struct KeyFailure {
    organization_id: String,
    #[source]
    source: SecretsError,
}

impl Keyring {
    pub fn new(master: MasterKey, store: Store) -> Self {
        Self {
            master: Arc::new(master),
            store,
            unwrapped: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What a sealed value is bound to: the organization and the kind of row holding it.
    /// A ciphertext moved to another organization's row, or from a registry password to a
    /// variable, does not open.
    fn binding(organization_id: &str, kind: Kind) -> Vec<u8> {
        secrets::associated_data(&[
            b"slipway.catalog",
            kind.table().as_bytes(),
            organization_id.as_bytes(),
        ])
    }

    async fn data_key(&self, organization_id: &str) -> Result<DataKey, ApiError> {
        if let Ok(keys) = self.unwrapped.lock()
            && let Some(key) = keys.get(organization_id)
        {
            return Ok(key.clone());
        }
        let failure = |source| {
            ApiError::internal(KeyFailure {
                organization_id: organization_id.to_owned(),
                source,
            })
        };
        let fresh = DataKey::generate()
            .and_then(|key| self.master.wrap(&key))
            .map_err(failure)?;
        let stored = self
            .store
            .organization_key(organization_id, move || fresh.into_bytes())
            .await?;
        let key = WrappedDataKey::from_bytes(stored)
            .and_then(|wrapped| self.master.unwrap(&wrapped))
            .map_err(failure)?;
        if let Ok(mut keys) = self.unwrapped.lock() {
            keys.insert(organization_id.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// `plaintext` sealed for a row of `kind` in `organization_id`.
    pub async fn seal(
        &self,
        organization_id: &str,
        kind: Kind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ApiError> {
        let key = self.data_key(organization_id).await?;
        key.seal(plaintext, &Self::binding(organization_id, kind))
            .map_err(|source| {
                ApiError::internal(KeyFailure {
                    organization_id: organization_id.to_owned(),
                    source,
                })
            })
    }

    /// The plaintext of a value [`Keyring::seal`] sealed for the same organization and kind.
    pub async fn open(
        &self,
        organization_id: &str,
        kind: Kind,
        sealed: &[u8],
    ) -> Result<Vec<u8>, ApiError> {
        let key = self.data_key(organization_id).await?;
        key.open(sealed, &Self::binding(organization_id, kind))
            .map_err(|source| {
                ApiError::internal(KeyFailure {
                    organization_id: organization_id.to_owned(),
                    source,
                })
            })
    }
}
