//! The one route table: the router is built from it, and the boundary tests walk it, so a route added
//! here is served and checked against foreign credentials without anyone remembering to.
//!
//! Add a route ONLY here, with the access it needs ([`Access`]).

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{
    SharedState, admin, agent_keys, agents, anchor, api_keys, commitments, compat, cursors, events, health, ingest,
    openapi, tlog,
};

/// A permission a credential may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Read,
    Write,
    Admin,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential (health, readiness, metrics).
    Public,
    /// Any valid credential; the answer holds no tenant's data.
    AnyCaller,
    /// Data of one tenant as a whole (with `Admin`: a tenant-wide admin, not a store-scoped one).
    Tenant(Perm),
    /// Data of one stream: the credential's tenant and store list must cover it.
    Stream(Perm),
    /// A read of one stream's transparency log (`{tenant_id}/{store_id}` in the path): `Stream(Read)`,
    /// except for a stream listed in `TLOG_PUBLIC_READ`, where anyone gets the same answer without a
    /// credential (none is looked at). Only for what the log's tiles and checkpoint already show.
    PublicIfListed,
    /// An admin listing or aggregate, filtered to the caller's tenant and stores.
    Filtered,
    /// The bootstrap admin only (database-wide maintenance).
    Global,
    /// One agent's own resources (cursor, agent-bound keys, policy): the agent's bound key or an admin
    /// of the tenant named in the request; the handler decides, and `tests/clients.rs` checks it.
    Agent,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// The full path, with `{name}` parameters.
    pub path: &'static str,
    pub access: Access,
}

struct Route {
    spec: RouteSpec,
    handler: MethodRouter<SharedState>,
}

fn r<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, SharedState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum can route");
    Route { spec: RouteSpec { method, path, access }, handler: on(filter, handler) }
}

fn table() -> Vec<Route> {
    use Access::*;
    use Perm::*;
    const GET: Method = Method::GET;
    const POST: Method = Method::POST;
    const DELETE: Method = Method::DELETE;
    const PUT: Method = Method::PUT;
    vec![
        r(GET, "/health", Public, health::health),
        r(GET, "/ready", Public, health::ready),
        r(GET, "/metrics", Public, health::metrics),
        r(GET, "/api/v1/openapi.json", Public, openapi::serve),
        r(POST, "/api/v1/ves/events/ingest", Stream(Write), ingest::ingest_ves),
        r(GET, "/api/v1/ves/events", Stream(Read), events::ves_events),
        r(GET, "/api/v1/ves/head", Stream(Read), events::head),
        r(GET, "/api/v1/ves/entities/{entity_type}/{entity_id}", Stream(Read), events::ves_entity),
        r(GET, "/api/v1/ves/sequencer", AnyCaller, ingest::sequencer_info),
        r(POST, "/api/v1/ves/commitments", Stream(Write), commitments::create),
        r(GET, "/api/v1/ves/commitments", Stream(Read), commitments::list),
        r(POST, "/api/v1/ves/commitments/anchor", Stream(Admin), anchor::commit_and_anchor),
        r(POST, "/api/v1/ves/anchor", Stream(Admin), anchor::anchor),
        r(GET, "/api/v1/ves/anchor/{batch_id}/verify", Stream(Read), anchor::verify),
        r(GET, "/api/v1/ves/commitments/consistency", Stream(Read), commitments::consistency),
        r(GET, "/api/v1/ves/checkpoint", Stream(Read), commitments::checkpoint),
        r(GET, "/api/v1/ves/commitments/{batch_id}", Stream(Read), commitments::get_one),
        r(POST, "/api/v1/ves/commitments/{batch_id}/correct", Stream(Admin), commitments::correct),
        r(POST, "/api/v1/ves/proofs/verify", AnyCaller, commitments::verify),
        r(GET, "/api/v1/ves/proofs/{sequence_number}", Stream(Read), commitments::proof),
        r(GET, "/api/v1/ves/tlog/{tenant_id}/{store_id}/checkpoint", PublicIfListed, tlog::checkpoint),
        r(GET, "/api/v1/ves/tlog/{tenant_id}/{store_id}/tile/{*path}", PublicIfListed, tlog::tile),
        r(GET, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/inclusion", PublicIfListed, tlog::inclusion),
        r(GET, "/api/v1/ves/tlog/{tenant_id}/{store_id}/proof/consistency", PublicIfListed, tlog::consistency),
        r(GET, "/api/v1/ves/tlog/{tenant_id}/{store_id}/bundle", PublicIfListed, tlog::bundle),
        r(GET, "/api/v1/admin/tlog/witnesses", Filtered, tlog::witnesses),
        r(POST, "/api/v1/events/ingest", Stream(Write), ingest::ingest_legacy),
        r(GET, "/api/v1/events", Stream(Read), events::events),
        r(GET, "/api/v1/head", Stream(Read), events::head),
        r(GET, "/api/v1/entities/{entity_type}/{entity_id}", Stream(Read), events::entity),
        r(POST, "/api/v1/agents/keys", Tenant(Admin), agent_keys::register),
        r(GET, "/api/v1/agents/keys", Tenant(Read), agent_keys::list),
        r(POST, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/revoke", Tenant(Admin), agent_keys::revoke),
        r(POST, "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}/rotate", Tenant(Admin), agent_keys::rotate),
        r(GET, "/api/v1/admin/status", Filtered, admin::status),
        r(GET, "/api/v1/admin/dead-letters", Filtered, admin::list_dead_letters),
        r(POST, "/api/v1/admin/dead-letters/retry", Stream(Admin), admin::retry_dead_letters),
        r(POST, "/api/v1/admin/dead-letters/purge", Stream(Admin), admin::purge_dead_letters),
        r(POST, "/api/v1/admin/maintenance/vacuum", Global, admin::vacuum),
        r(POST, "/api/v1/admin/maintenance/terminate-idle-connections", Global, admin::terminate_idle_connections),
        r(GET, "/api/v1/admin/dead-letters/{id}", Stream(Admin), admin::get_dead_letter),
        r(DELETE, "/api/v1/admin/dead-letters/{id}", Stream(Admin), admin::delete_dead_letter),
        r(POST, "/api/v1/admin/dead-letters/{id}/retry", Stream(Admin), admin::retry_dead_letter),
        r(POST, "/api/v1/admin/verify", Stream(Admin), admin::verify),
        r(POST, "/api/v1/admin/verify/jobs", Stream(Admin), admin::start_verify_job),
        r(GET, "/api/v1/admin/verify/jobs/{id}", Stream(Admin), admin::verify_job),
        r(POST, "/api/v1/admin/streams/{tenant_id}/{store_id}/pause", Stream(Admin), admin::pause),
        r(POST, "/api/v1/admin/streams/{tenant_id}/{store_id}/resume", Stream(Admin), admin::resume),
        r(POST, "/api/v1/admin/api-keys", Stream(Admin), api_keys::create),
        r(GET, "/api/v1/admin/api-keys", Filtered, api_keys::list),
        r(DELETE, "/api/v1/admin/api-keys/{id}", Stream(Admin), api_keys::revoke),
        r(GET, "/api/v1/ves/cursors/{agent_id}", Agent, cursors::get),
        r(PUT, "/api/v1/ves/cursors/{agent_id}", Agent, cursors::acknowledge),
        r(POST, "/api/v1/agents/{agent_id}/api-keys", Agent, agents::create_key),
        r(GET, "/api/v1/agents/{agent_id}/api-keys", Agent, agents::list_keys),
        r(DELETE, "/api/v1/agents/{agent_id}/api-keys/{key_prefix}", Agent, agents::revoke_key),
        r(GET, "/api/v1/agents/{agent_id}/policy", Agent, agents::get_policy),
        r(PUT, "/api/v1/agents/{agent_id}/policy", Agent, agents::put_policy),
        // Out of scope (JSON 501 naming why), answered so that the newer clients fail clearly.
        r(GET, "/api/v1/projections/{entity_type}/{entity_id}", AnyCaller, compat::projections),
        r(GET, "/api/v1/ves/validity/{*rest}", AnyCaller, compat::stark_proofs),
        r(POST, "/api/v1/ves/validity/{*rest}", AnyCaller, compat::stark_proofs),
        r(GET, "/api/v1/ves/compliance/{*rest}", AnyCaller, compat::stark_proofs),
        r(POST, "/api/v1/ves/compliance/{*rest}", AnyCaller, compat::stark_proofs),
        r(GET, "/api/v1/x402/{*rest}", AnyCaller, compat::x402),
        r(POST, "/api/v1/x402/{*rest}", AnyCaller, compat::x402),
    ]
}

/// Every route the server answers, in table order.
pub fn route_table() -> Vec<RouteSpec> {
    table().into_iter().map(|r| r.spec).collect()
}

/// The routers of each way in, by the access their routes need; the caller layers on the second
/// and third what lets a request through.
pub(super) struct Routers {
    /// [`Access::Public`]: no credential.
    pub public: Router<SharedState>,
    /// [`Access::PublicIfListed`]: no credential for a listed stream, else authenticated.
    pub public_if_listed: Router<SharedState>,
    /// Every other route: authenticated.
    pub authenticated: Router<SharedState>,
}

pub(super) fn routers() -> Routers {
    let mut routers = Routers { public: Router::new(), public_if_listed: Router::new(), authenticated: Router::new() };
    for route in table() {
        let router = match route.spec.access {
            Access::Public => &mut routers.public,
            Access::PublicIfListed => &mut routers.public_if_listed,
            _ => &mut routers.authenticated,
        };
        *router = std::mem::take(router).route(route.spec.path, route.handler);
    }
    routers
}
