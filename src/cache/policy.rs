//! Cache policies: what a task's cache key is made of.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;

use crate::Context;

/// A user function that builds (part of) a cache key from a task run's context: the
/// flow and task names and ids, the flow's parameters and the task's inputs by name.
/// Returning `None` turns caching off for that run.
pub type KeyFn = Arc<dyn Fn(&Context) -> Option<String> + Send + Sync>;

const INPUTS_BIT: u8 = 1;
const TASK_SOURCE_BIT: u8 = 2;
const RUN_ID_BIT: u8 = 4;
const FLOW_PARAMETERS_BIT: u8 = 8;
const SIGNATURE_BIT: u8 = 16;
const IDENTITY_BIT: u8 = 32;

/// What a task's cache key is made of.
///
/// Policies compose with `+`, and `INPUTS - "name"` leaves an input out:
///
/// | policy | the key changes when |
/// |---|---|
/// | [`INPUTS`] | any input's value changes |
/// | [`TASK_SOURCE`] | the task's code changes (not its comments or formatting) |
/// | [`RUN_ID`] | the flow run changes (each call outside a flow is its own run) |
/// | [`FLOW_PARAMETERS`] | the flow's parameters change |
/// | [`SIGNATURE`] | an input's name or type, or the output type, changes |
/// | [`IDENTITY`] | never: the task's identity alone |
/// | [`CachePolicy::version`] / [`CachePolicy::salt`] | the given string changes |
/// | [`CachePolicy::key_fn`] | the function's result changes |
/// | [`NONE`] | nothing is cached |
///
/// [`DEFAULT`] is `INPUTS + TASK_SOURCE + RUN_ID`. Every key also holds the task's
/// name (or its shared `cache_key`) and its namespace, so two tasks never share an
/// entry by accident.
///
/// ```
/// use cairn::cache::{CachePolicy, DEFAULT, INPUTS, RUN_ID, TASK_SOURCE};
/// assert_eq!(DEFAULT, INPUTS + TASK_SOURCE + RUN_ID);
/// let policy = INPUTS - "debug" + CachePolicy::version("2");
/// assert_eq!(policy.to_string(), "INPUTS - \"debug\" + Version(\"2\")");
/// assert!(policy.excludes("debug"));
/// ```
#[derive(Clone)]
pub struct CachePolicy {
    bits: u8,
    excluded: Vec<String>,
    only_inputs: Option<Vec<String>>,
    only_parameters: Option<Vec<String>>,
    version: Option<String>,
    salt: Option<String>,
    key_fns: Vec<KeyFn>,
}

/// Caching off: no key, no lookup, no record. The identity of `+`.
pub const NONE: CachePolicy = CachePolicy::bits(0);
/// The task's inputs, each by its canonical hash.
pub const INPUTS: CachePolicy = CachePolicy::bits(INPUTS_BIT);
/// The task's code: the digest `#[cairn::task]` takes of the body's tokens, or the
/// text given with `Task::task_source`.
pub const TASK_SOURCE: CachePolicy = CachePolicy::bits(TASK_SOURCE_BIT);
/// The flow run's id (the task run's own id for a call outside a flow).
pub const RUN_ID: CachePolicy = CachePolicy::bits(RUN_ID_BIT);
/// The flow's parameters.
pub const FLOW_PARAMETERS: CachePolicy = CachePolicy::bits(FLOW_PARAMETERS_BIT);
/// The task's signature: its input names and types and its output type.
pub const SIGNATURE: CachePolicy = CachePolicy::bits(SIGNATURE_BIT);
/// The task's identity alone: one entry per task (or per shared `cache_key`), valid
/// until it expires. Prefect 1's `duration_only`.
pub const IDENTITY: CachePolicy = CachePolicy::bits(IDENTITY_BIT);
/// `INPUTS + TASK_SOURCE + RUN_ID`.
pub const DEFAULT: CachePolicy = CachePolicy::bits(INPUTS_BIT | TASK_SOURCE_BIT | RUN_ID_BIT);

impl CachePolicy {
    const fn bits(bits: u8) -> Self {
        CachePolicy {
            bits,
            excluded: Vec::new(),
            only_inputs: None,
            only_parameters: None,
            version: None,
            salt: None,
            key_fns: Vec::new(),
        }
    }

    /// An explicit version: bump it to invalidate every entry; set it back to reuse
    /// the old ones.
    pub fn version(version: impl Into<String>) -> Self {
        CachePolicy {
            version: Some(version.into()),
            ..CachePolicy::bits(0)
        }
    }

    /// A salt mixed into the key.
    pub fn salt(salt: impl Into<String>) -> Self {
        CachePolicy {
            salt: Some(salt.into()),
            ..CachePolicy::bits(0)
        }
    }

    /// A key component computed by `f` from the run's context; `None` from `f` turns
    /// caching off for that run.
    ///
    /// ```
    /// use cairn::cache::CachePolicy;
    /// // One entry per city, whatever the other inputs are.
    /// let by_city = CachePolicy::key_fn(|ctx| ctx.get("city").map(|c| c.to_string()));
    /// # let _ = by_city;
    /// ```
    pub fn key_fn(f: impl Fn(&Context) -> Option<String> + Send + Sync + 'static) -> Self {
        CachePolicy {
            key_fns: vec![Arc::new(f)],
            ..CachePolicy::bits(0)
        }
    }

    /// Only the named inputs (Prefect 1's `partial_inputs_only`).
    pub fn inputs_only<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        CachePolicy {
            only_inputs: Some(names.into_iter().map(Into::into).collect()),
            ..CachePolicy::bits(INPUTS_BIT)
        }
    }

    /// Only the named flow parameters (Prefect 1's `partial_parameters_only`).
    pub fn parameters_only<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        CachePolicy {
            only_parameters: Some(names.into_iter().map(Into::into).collect()),
            ..CachePolicy::bits(FLOW_PARAMETERS_BIT)
        }
    }

    /// Whether this policy caches at all.
    pub fn is_none(&self) -> bool {
        self.bits == 0 && self.version.is_none() && self.salt.is_none() && self.key_fns.is_empty()
    }

    /// Whether input `name` is left out of the key.
    pub fn excludes(&self, name: &str) -> bool {
        self.excluded.iter().any(|e| e == name)
            || self
                .only_inputs
                .as_ref()
                .is_some_and(|only| !only.iter().any(|o| o == name))
    }

    /// The input names the policy names (`- "debug"`, `inputs_only([...])`).
    pub(crate) fn named_inputs(&self) -> impl Iterator<Item = &str> {
        self.excluded
            .iter()
            .chain(self.only_inputs.iter().flatten())
            .map(String::as_str)
    }

    pub(crate) fn uses_inputs(&self) -> bool {
        self.bits & INPUTS_BIT != 0
    }
    pub(crate) fn uses_task_source(&self) -> bool {
        self.bits & TASK_SOURCE_BIT != 0
    }
    pub(crate) fn uses_run_id(&self) -> bool {
        self.bits & RUN_ID_BIT != 0
    }
    pub(crate) fn uses_parameters(&self) -> bool {
        self.bits & FLOW_PARAMETERS_BIT != 0
    }
    pub(crate) fn uses_signature(&self) -> bool {
        self.bits & SIGNATURE_BIT != 0
    }
    pub(crate) fn parameter_included(&self, name: &str) -> bool {
        self.only_parameters
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    }
    pub(crate) fn version_str(&self) -> Option<&str> {
        self.version.as_deref()
    }
    pub(crate) fn salt_str(&self) -> Option<&str> {
        self.salt.as_deref()
    }
    pub(crate) fn key_functions(&self) -> &[KeyFn] {
        &self.key_fns
    }

    /// The names of the parts, for records and logs (`inputs`, `task_source`, ...).
    pub(crate) fn component_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (bit, name) in [
            (INPUTS_BIT, "inputs"),
            (TASK_SOURCE_BIT, "task_source"),
            (RUN_ID_BIT, "run_id"),
            (FLOW_PARAMETERS_BIT, "flow_parameters"),
            (SIGNATURE_BIT, "signature"),
            (IDENTITY_BIT, "identity"),
        ] {
            if self.bits & bit != 0 {
                names.push(name);
            }
        }
        if self.version.is_some() {
            names.push("version");
        }
        if self.salt.is_some() {
            names.push("salt");
        }
        if !self.key_fns.is_empty() {
            names.push("key_fn");
        }
        names
    }
}

fn join(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("{a}+{b}")),
        (a, b) => a.or(b),
    }
}

fn join_lists(a: Option<Vec<String>>, b: Option<Vec<String>>) -> Option<Vec<String>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(
            a.into_iter()
                .chain(b)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
        (a, b) => a.or(b),
    }
}

impl Add for CachePolicy {
    type Output = CachePolicy;
    fn add(mut self, other: CachePolicy) -> CachePolicy {
        // An input left out by one side but used by the other stays in, unless
        // both leave it out.
        let excluded = if self.uses_inputs() && !other.uses_inputs() {
            self.excluded
        } else if other.uses_inputs() && !self.uses_inputs() {
            other.excluded
        } else {
            self.excluded
                .into_iter()
                .filter(|e| other.excluded.contains(e))
                .collect()
        };
        self.key_fns.extend(other.key_fns);
        CachePolicy {
            bits: self.bits | other.bits,
            excluded,
            only_inputs: join_lists(self.only_inputs, other.only_inputs),
            only_parameters: join_lists(self.only_parameters, other.only_parameters),
            version: join(self.version, other.version),
            salt: join(self.salt, other.salt),
            key_fns: self.key_fns,
        }
    }
}

impl Sub<&str> for CachePolicy {
    type Output = CachePolicy;
    fn sub(mut self, input: &str) -> CachePolicy {
        if !self.excluded.iter().any(|e| e == input) {
            self.excluded.push(input.to_owned());
            self.excluded.sort();
        }
        self
    }
}

impl Sub<String> for CachePolicy {
    type Output = CachePolicy;
    fn sub(self, input: String) -> CachePolicy {
        self - input.as_str()
    }
}

impl PartialEq for CachePolicy {
    /// Policies are equal when they build the same keys; key functions compare by
    /// identity.
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
            && self.excluded == other.excluded
            && self.only_inputs == other.only_inputs
            && self.only_parameters == other.only_parameters
            && self.version == other.version
            && self.salt == other.salt
            && self.key_fns.len() == other.key_fns.len()
            && self
                .key_fns
                .iter()
                .zip(&other.key_fns)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("NONE");
        }
        let mut parts: Vec<String> = Vec::new();
        if self.bits & (INPUTS_BIT | TASK_SOURCE_BIT | RUN_ID_BIT)
            == (INPUTS_BIT | TASK_SOURCE_BIT | RUN_ID_BIT)
            && self.only_inputs.is_none()
        {
            let mut s = "DEFAULT".to_owned();
            for e in &self.excluded {
                s.push_str(&format!(" - {e:?}"));
            }
            parts.push(s);
        } else {
            if self.uses_inputs() {
                let mut s = match &self.only_inputs {
                    Some(only) => format!("INPUTS{only:?}"),
                    None => "INPUTS".to_owned(),
                };
                for e in &self.excluded {
                    s.push_str(&format!(" - {e:?}"));
                }
                parts.push(s);
            }
            if self.uses_task_source() {
                parts.push("TASK_SOURCE".into());
            }
            if self.uses_run_id() {
                parts.push("RUN_ID".into());
            }
        }
        if self.uses_parameters() {
            parts.push(match &self.only_parameters {
                Some(only) => format!("FLOW_PARAMETERS{only:?}"),
                None => "FLOW_PARAMETERS".into(),
            });
        }
        if self.uses_signature() {
            parts.push("SIGNATURE".into());
        }
        if self.bits & IDENTITY_BIT != 0 {
            parts.push("IDENTITY".into());
        }
        if let Some(v) = &self.version {
            parts.push(format!("Version({v:?})"));
        }
        if let Some(s) = &self.salt {
            parts.push(format!("Salt({s:?})"));
        }
        for _ in &self.key_fns {
            parts.push("KeyFn".into());
        }
        f.write_str(&parts.join(" + "))
    }
}

impl fmt::Debug for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Default for CachePolicy {
    /// [`DEFAULT`].
    fn default() -> Self {
        DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_unions_parts_and_none_is_the_identity() {
        assert_eq!(INPUTS + TASK_SOURCE + RUN_ID, DEFAULT);
        assert_eq!(NONE + INPUTS, INPUTS);
        assert!(NONE.is_none() && !IDENTITY.is_none());
        assert_eq!(
            (INPUTS + CachePolicy::version("1")).component_names(),
            ["inputs", "version"]
        );
    }

    #[test]
    fn exclusions_apply_to_inputs_only_where_every_side_excludes() {
        let p = INPUTS - "debug" - "verbose";
        assert!(p.excludes("debug") && p.excludes("verbose") && !p.excludes("x"));
        assert!((p.clone() + TASK_SOURCE).excludes("debug"));
        // The other side hashes every input: "debug" is back in.
        assert!(!(p + INPUTS).excludes("debug"));
        let only = CachePolicy::inputs_only(["x"]);
        assert!(!only.excludes("x") && only.excludes("y"));
    }

    #[test]
    fn display_names_the_parts() {
        assert_eq!(DEFAULT.to_string(), "DEFAULT");
        assert_eq!((INPUTS - "debug").to_string(), "INPUTS - \"debug\"");
        assert_eq!(
            (TASK_SOURCE + FLOW_PARAMETERS + CachePolicy::salt("s")).to_string(),
            "TASK_SOURCE + FLOW_PARAMETERS + Salt(\"s\")"
        );
        assert_eq!(NONE.to_string(), "NONE");
    }
}
