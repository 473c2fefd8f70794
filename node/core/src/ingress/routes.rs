//! Route tables: the validated form of a listener's routes, and matching.

use super::balance::Balance;
use super::normalize::{normalize_host, Path, PathError, Request};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most routes one listener may have.
pub const MAX_ROUTES: usize = 256;
/// Longest route id.
pub const MAX_ROUTE_ID_LEN: usize = 64;
/// Longest path prefix, raw.
pub const MAX_PREFIX_LEN: usize = 1024;
/// Most labels in a selector.
pub const MAX_SELECTOR_LABELS: usize = 16;
/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 63;
/// Most agent pools a target may have.
pub const MAX_POOLS: usize = 16;
/// Largest pool weight.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Largest static response body.
pub const MAX_STATIC_BODY: usize = 64 * 1024;
/// Longest static content type.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;
/// Longest redirect location (before the kept path and query).
pub const MAX_REDIRECT_LEN: usize = 2048;
/// Longest service name.
pub const MAX_SERVICE_LEN: usize = 64;

/// A route as configured, before validation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RouteSpec {
    /// Unique within its listener: `[A-Za-z0-9._-]`, 1–64 bytes.
    pub id: String,
    /// Lower numbers are tried first; ties in id order.
    pub priority: u32,
    /// `example.com` or `*.example.com`; `None` matches every host.
    pub host: Option<String>,
    /// A path prefix such as `/api` (raw form, `%`-escapes allowed);
    /// `None` matches every path.
    pub path_prefix: Option<String>,
    /// Strict routes refuse encoded `/` and `\` (`%2F`, `%5C`) in the path.
    pub strict: bool,
    /// What a match does.
    pub target: TargetSpec,
}

/// A target as configured.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TargetSpec {
    /// Forward to an agent chosen among pools.
    Agents {
        /// The named service on the agent.
        service: String,
        /// `(group, selector "k=v,…", weight)` for each pool.
        pools: Vec<(u8, String, u32)>,
        /// How to choose among the candidates.
        balance: Balance,
    },
    /// Answer at the gateway.
    Static {
        /// 200–599.
        status: u16,
        /// The `Content-Type`.
        content_type: String,
        /// The body.
        body: Vec<u8>,
    },
    /// Redirect.
    Redirect {
        /// 301, 302, 307 or 308.
        status: u16,
        /// An `http(s)://` URL or an absolute path.
        to: String,
        /// Append the request path after the route's prefix.
        keep_path: bool,
        /// Append the request's query.
        keep_query: bool,
    },
}

/// A label selector: every `key=value` must be carried by the agent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LabelSelector(BTreeMap<String, String>);

impl LabelSelector {
    /// Parses `key=value,key=value`: keys `[A-Za-z0-9._/-]` 1–63 bytes,
    /// values `[A-Za-z0-9._-]` 0–63 bytes (an empty value matches only an
    /// empty value), at least one and at most 16 labels, no key twice.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(s: &str) -> Result<LabelSelector, &'static str> {
        let mut labels = BTreeMap::new();
        for item in s.split(',') {
            let (k, v) = item.trim().split_once('=').ok_or("a label without `=`")?;
            let key_ok = |b: u8| b.is_ascii_alphanumeric() || b"._/-".contains(&b);
            let val_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
            if k.is_empty() || k.len() > MAX_LABEL_LEN || !k.bytes().all(key_ok) {
                return Err("bad label key");
            }
            if v.len() > MAX_LABEL_LEN || !v.bytes().all(val_ok) {
                return Err("bad label value");
            }
            if labels.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err("a label key twice");
            }
        }
        if labels.len() > MAX_SELECTOR_LABELS {
            return Err("more than 16 labels");
        }
        Ok(LabelSelector(labels))
    }

    /// Whether `labels` carries every label of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// A set of agents a target may use: those whose labels match `selector`,
/// in failover group `group` (lower first), each with weight `weight`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentPool {
    /// The failover group: the lowest group with an available agent is used.
    pub group: u8,
    /// Which agents.
    pub selector: LabelSelector,
    /// Weight of each of its agents for [`Balance::Weighted`], 1–1,000,000.
    pub weight: u32,
}

/// Forward to an agent.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AgentTarget {
    /// The agent's service to open.
    pub service: String,
    /// The pools, in configured order.
    pub pools: Vec<AgentPool>,
    /// The strategy.
    pub balance: Balance,
}

/// A response the gateway sends itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StaticResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body, at most [`MAX_STATIC_BODY`].
    pub body: Bytes,
}

/// A redirect target.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Redirect {
    /// 301, 302, 307 or 308.
    pub status: u16,
    /// Where to.
    pub to: String,
    /// Append the path after the route prefix.
    pub keep_path: bool,
    /// Append the query.
    pub keep_query: bool,
}

impl Redirect {
    /// The `Location` for a request whose raw path after the route's prefix
    /// is `suffix` (`""` or `/…`): `to` (without a trailing `/` when a suffix
    /// follows) + suffix, then `?query` (`&query` if `to` has one). Bytes
    /// outside visible ASCII are percent-encoded.
    pub fn location(&self, suffix: &str, query: Option<&str>) -> String {
        let mut loc = self.to.clone();
        if self.keep_path && !suffix.is_empty() {
            while loc.ends_with('/') && !loc.ends_with("://") {
                loc.pop();
            }
            push_visible(&mut loc, suffix);
        }
        if let Some(q) = query.filter(|q| self.keep_query && !q.is_empty()) {
            loc.push(if self.to.contains('?') { '&' } else { '?' });
            push_visible(&mut loc, q);
        }
        loc
    }
}

/// Appends `s` with every byte outside `!`..`~` percent-encoded.
fn push_visible(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// What a route does.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Target {
    /// Forward to an agent.
    Agents(Arc<AgentTarget>),
    /// Answer at the gateway.
    Static(Arc<StaticResponse>),
    /// Redirect.
    Redirect(Redirect),
}

/// A host pattern.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HostPattern {
    /// This host only.
    Exact(String),
    /// `*.suffix`: exactly one label before `.suffix`; never the suffix itself.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `example.com` or `*.example.com` (normalised like a request's host).
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(s: &str) -> Result<HostPattern, &'static str> {
        match s.strip_prefix("*.") {
            Some(suffix) if suffix.starts_with('[') => Err("`*.` before an IP literal"),
            Some(suffix) => Ok(HostPattern::Wildcard(normalize_host(suffix)?)),
            None if s.contains('*') => Err("`*` only as a whole first label (`*.example.com`)"),
            None => Ok(HostPattern::Exact(normalize_host(s)?)),
        }
    }

    /// Whether the normalised `host` matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }
}

/// A segment-aware path prefix: `/api` matches `/api`, `/api/` and
/// `/api/x`, never `/apix`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PathPrefix {
    raw: String,
    segments: Vec<Vec<u8>>,
}

impl PathPrefix {
    /// Parses a prefix: an absolute path without a trailing `/` (except `/`
    /// itself), empty segments, encoded separators or anything [`Path`] refuses.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(s: &str) -> Result<PathPrefix, &'static str> {
        if s.len() > MAX_PREFIX_LEN {
            return Err("longer than 1024 bytes");
        }
        if s.contains('?') || s.contains('#') {
            return Err("a query or fragment");
        }
        let path = Path::parse(s).map_err(|e| match e {
            PathError::NotAbsolute => "must start with /",
            PathError::DotSegment => "dot segment",
            PathError::Backslash => "backslash",
            PathError::ControlByte => "control byte",
            _ => "malformed percent escape",
        })?;
        if path.encoded_separator().is_some() {
            return Err("encoded / or \\");
        }
        if s == "/" {
            return Ok(PathPrefix { raw: s.to_owned(), segments: Vec::new() });
        }
        let segments: Vec<Vec<u8>> = path.segments().map(<[u8]>::to_vec).collect();
        if segments.iter().any(Vec::is_empty) {
            return Err("empty segment or trailing /");
        }
        Ok(PathPrefix { raw: s.to_owned(), segments })
    }

    /// How many segments it has (`/` has none).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether this is `/`.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The prefix as configured.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether `path`'s decoded segments start with the prefix's.
    pub fn matches(&self, path: &Path) -> bool {
        path.segment_count() >= self.segments.len()
            && path.segments().zip(&self.segments).all(|(a, b)| a == &b[..])
    }
}

/// A validated route.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Route {
    /// Its id.
    pub id: String,
    /// Its priority.
    pub priority: u32,
    /// Its host pattern.
    pub host: Option<HostPattern>,
    /// Its path prefix.
    pub path_prefix: Option<PathPrefix>,
    /// Whether encoded separators are refused.
    pub strict: bool,
    /// Its target, shared with the decisions made under it.
    pub target: Target,
}

impl Route {
    /// Whether `request` matches the host pattern and the path prefix.
    pub fn matches(&self, request: &Request) -> bool {
        let host_ok = match (&self.host, &request.host) {
            (None, _) => true,
            (Some(p), Some(h)) => p.matches(h),
            (Some(_), None) => false,
        };
        host_ok && self.path_prefix.as_ref().is_none_or(|p| p.matches(&request.path))
    }
}

/// Why a route table is refused: the listener, the route (`None` for the
/// listener itself or its default), the field and the problem.
#[derive(thiserror::Error, Clone, PartialEq, Eq, Debug)]
#[error("listener `{listener}`{}: `{field}`: {problem}", route.as_ref().map(|r| format!(", route `{r}`")).unwrap_or_default())]
pub struct ConfigError {
    /// The listener.
    pub listener: String,
    /// The route id, if the error is in a route (`default` for the default route).
    pub route: Option<String>,
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// One listener's routes, ordered by (priority, id), and its default.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    default: Option<(bool, Target)>,
}

impl RouteTable {
    /// Validates `routes` and `default` (target and strictness) for
    /// `listener`.
    ///
    /// # Errors
    /// The first problem found, in configured order.
    pub fn new(
        listener: &str,
        routes: &[RouteSpec],
        default: Option<(bool, &TargetSpec)>,
    ) -> Result<RouteTable, ConfigError> {
        let err = |route: Option<&str>, field, problem: &str| ConfigError {
            listener: listener.to_owned(),
            route: route.map(str::to_owned),
            field,
            problem: problem.to_owned(),
        };
        if routes.len() > MAX_ROUTES {
            return Err(err(None, "routes", "more than 256 routes"));
        }
        let mut ids = BTreeSet::new();
        let mut out = Vec::with_capacity(routes.len());
        for spec in routes {
            let id = spec.id.as_str();
            let id_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
            if id.is_empty() || id.len() > MAX_ROUTE_ID_LEN || !id.bytes().all(id_ok) {
                return Err(err(Some(id), "id", "must be 1-64 of [A-Za-z0-9._-]"));
            }
            if !ids.insert(id) {
                return Err(err(Some(id), "id", "used twice"));
            }
            let host = spec.host.as_deref().map(HostPattern::parse).transpose();
            let host = host.map_err(|e| err(Some(id), "host", e))?;
            let prefix = spec.path_prefix.as_deref().map(PathPrefix::parse).transpose();
            let path_prefix = prefix.map_err(|e| err(Some(id), "path_prefix", e))?;
            if host.is_none() && path_prefix.is_none() {
                return Err(err(Some(id), "host", "a route needs a host, a path prefix or both"));
            }
            let target = validate_target(&spec.target).map_err(|(f, p)| err(Some(id), f, p))?;
            out.push(Route {
                id: spec.id.clone(),
                priority: spec.priority,
                host,
                path_prefix,
                strict: spec.strict,
                target,
            });
        }
        out.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
        let default = match default {
            None => None,
            Some((strict, spec)) => {
                let t = validate_target(spec).map_err(|(f, p)| err(Some("default"), f, p))?;
                Some((strict, t))
            }
        };
        Ok(RouteTable { routes: out, default })
    }

    /// The routes in matching order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The default route's strictness and target.
    pub fn default_target(&self) -> Option<(bool, &Target)> {
        self.default.as_ref().map(|(s, t)| (*s, t))
    }

    /// The first route (in (priority, id) order) that matches `request`.
    pub fn first_match(&self, request: &Request) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(request))
    }
}

/// A validated target, or the field and problem.
fn validate_target(spec: &TargetSpec) -> Result<Target, (&'static str, &'static str)> {
    match spec {
        TargetSpec::Agents { service, pools, balance } => {
            let name_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
            if service.is_empty()
                || service.len() > MAX_SERVICE_LEN
                || !service.bytes().all(name_ok)
            {
                return Err(("service", "must be 1-64 of [A-Za-z0-9._-]"));
            }
            if pools.is_empty() || pools.len() > MAX_POOLS {
                return Err(("pools", "must have 1-16 pools"));
            }
            let mut out = Vec::with_capacity(pools.len());
            for (group, selector, weight) in pools {
                let selector = LabelSelector::parse(selector).map_err(|e| ("selector", e))?;
                if *weight == 0 || *weight > MAX_WEIGHT {
                    return Err(("weight", "must be 1-1000000"));
                }
                out.push(AgentPool { group: *group, selector, weight: *weight });
            }
            balance.validate().map_err(|e| ("balance", e))?;
            Ok(Target::Agents(Arc::new(AgentTarget {
                service: service.clone(),
                pools: out,
                balance: balance.clone(),
            })))
        }
        TargetSpec::Static { status, content_type, body } => {
            if !(200..=599).contains(status) {
                return Err(("status", "must be 200-599"));
            }
            let ct_ok = content_type.len() <= MAX_CONTENT_TYPE_LEN
                && content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
            if content_type.is_empty() || !ct_ok {
                return Err(("content_type", "must be 1-256 visible ASCII bytes"));
            }
            if body.len() > MAX_STATIC_BODY {
                return Err(("body", "larger than 64 KiB"));
            }
            Ok(Target::Static(Arc::new(StaticResponse {
                status: *status,
                content_type: content_type.clone(),
                body: Bytes::from(body.clone()),
            })))
        }
        TargetSpec::Redirect { status, to, keep_path, keep_query } => {
            if ![301, 302, 307, 308].contains(status) {
                return Err(("status", "must be 301, 302, 307 or 308"));
            }
            let lower = to.to_ascii_lowercase();
            let url = lower.starts_with("http://") || lower.starts_with("https://");
            let path = to.starts_with('/') && !to.starts_with("//");
            if !(url || path) {
                return Err(("to", "must be an http(s):// URL or an absolute path"));
            }
            if to.len() > MAX_REDIRECT_LEN || !to.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(("to", "must be at most 2048 visible ASCII bytes"));
            }
            let authority = lower.split_once("://").map(|(_, rest)| rest);
            if authority.is_some_and(|a| a.is_empty() || a.starts_with(['/', '?'])) {
                return Err(("to", "a URL without a host"));
            }
            if to.contains('#') {
                return Err(("to", "a fragment"));
            }
            Ok(Target::Redirect(Redirect {
                status: *status,
                to: to.clone(),
                keep_path: *keep_path,
                keep_query: *keep_query,
            }))
        }
    }
}
