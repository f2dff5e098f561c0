//! `TLOG_PUBLIC_READ`: the streams whose transparency log anyone may read without a credential.
//!
//! Comma-separated entries, `<tenant uuid>/<store uuid>` for one stream or `<tenant uuid>/*` for every
//! store of a tenant (spaces around entries are ignored; unset or empty: no stream). Anything else is
//! refused at start-up, so a typo never silently leaves a stream private, nor makes one public.
//! Only the log's read routes become public (`api::routes::Access::PublicIfListed`), never the
//! stream's other routes.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::store::events::StreamKey;

/// The streams listed in `TLOG_PUBLIC_READ`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicRead {
    /// `<tenant>/*`: every store of these tenants.
    tenants: BTreeSet<Uuid>,
    /// `<tenant>/<store>`.
    streams: BTreeSet<(Uuid, Uuid)>,
}

impl PublicRead {
    /// Parses the variable's value; the error says which entry is wrong and why.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut listed = PublicRead::default();
        if value.trim().is_empty() {
            return Ok(listed);
        }
        let expected = "expected comma-separated <tenant uuid>/<store uuid> or <tenant uuid>/*";
        for entry in value.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("an empty entry in {value:?}: {expected}"));
            }
            let (tenant, store) =
                entry.split_once('/').ok_or_else(|| format!("entry {entry:?} has no '/': {expected}"))?;
            if tenant == "*" {
                return Err(format!(
                    "entry {entry:?}: public read is per tenant or per stream, never for every tenant"
                ));
            }
            let tenant = uuid(tenant).ok_or_else(|| format!("entry {entry:?}: {tenant:?} is not a tenant UUID"))?;
            if store == "*" {
                listed.tenants.insert(tenant);
            } else {
                let store =
                    uuid(store).ok_or_else(|| format!("entry {entry:?}: {store:?} is not a store UUID or *"))?;
                listed.streams.insert((tenant, store));
            }
        }
        Ok(listed)
    }

    /// Whether anyone may read this stream's log.
    pub fn covers(&self, stream: StreamKey) -> bool {
        self.tenants.contains(&stream.tenant_id) || self.streams.contains(&(stream.tenant_id, stream.store_id))
    }

    /// No stream is listed.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.streams.is_empty()
    }
}

/// A UUID in its hyphenated form only (the form of the routes' paths), any case.
fn uuid(s: &str) -> Option<Uuid> {
    (s.len() == 36).then(|| Uuid::try_parse(s).ok()).flatten()
}
