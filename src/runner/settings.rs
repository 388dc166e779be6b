//! Process-wide settings: `$CAIRN_HOME/config.toml` and `CAIRN__SECTION__KEY`
//! environment variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::backend::{expand_home, Error, Result};

/// Settings that apply to every flow and task of a process unless a flow or task says
/// otherwise.
///
/// They come from two places, the environment winning over the file:
///
/// | setting | `$CAIRN_HOME/config.toml` | environment |
/// |---|---|---|
/// | checkpoint every task | `[flows] checkpointing = true` | `CAIRN__FLOWS__CHECKPOINTING=true` |
/// | refresh every cache | `[tasks] refresh_cache = true` | `CAIRN__TASKS__REFRESH_CACHE=true` |
/// | the store used when no task or flow names one | `[results] store = "s3://bucket/prefix"` | `CAIRN__RESULTS__STORE=...` |
/// | time limits and attempts of that store (S3, GCS) | `[results] read_timeout = "10s"` (also `connect_timeout`, `operation_timeout`, `max_attempts`) | `CAIRN__RESULTS__READ_TIMEOUT=10s` |
/// | fail a task when its cache store fails | `[tasks] strict_cache = true` | `CAIRN__TASKS__STRICT_CACHE=true` |
/// | how long a memory-tier hit is trusted ([`crate::cache::MemoryTier`]) | `[cache] memory_tier_revalidate_after_ms = 1000` | `CAIRN__CACHE__MEMORY_TIER_REVALIDATE_AFTER_MS=0` |
/// | a local disk tier in front of that store | `[results] cache_dir = "/var/cache/cairn"` | `CAIRN__RESULTS__CACHE_DIR=...` |
///
/// `CAIRN_HOME` defaults to `~/.cairn`. When no store is named anywhere, persisted
/// results and cache records go to `$CAIRN_HOME/storage` on the local disk. A leading
/// `~` in `CAIRN_HOME` or a store path is the home directory.
///
/// **A bad setting is ignored alone.** For the process-wide settings
/// ([`Settings::global`]), a value that is not valid (`CAIRN__FLOWS__CHECKPOINTING=maybe`)
/// is reported with a warning naming the variable or the file and key, and only that
/// setting is ignored: every other setting still applies. [`Settings::load`] and
/// [`Settings::from_sources`] return the first such error instead.
///
/// For checkpointing, the more specific setting wins: a task's own `checkpoint`, then
/// its flow's `checkpointing`, then the environment, then the file, then off.
///
/// ```
/// use cairn::Settings;
/// let home = tempfile::tempdir().unwrap();
/// std::fs::write(home.path().join("config.toml"), "[flows]\ncheckpointing = true\n").unwrap();
///
/// let settings = Settings::from_sources(home.path(), [("CAIRN__FLOWS__CHECKPOINTING", "false")])?;
/// assert_eq!(settings.checkpointing, Some(false)); // the environment wins over the file
///
/// let settings = Settings::from_sources(home.path(), Vec::<(String, String)>::new())?;
/// assert_eq!(settings.checkpointing, Some(true));
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// `CAIRN_HOME`.
    pub home: PathBuf,
    /// `[flows] checkpointing`; `None` when neither source sets it.
    pub checkpointing: Option<bool>,
    /// `[tasks] refresh_cache`; `None` when neither source sets it.
    pub refresh_cache: Option<bool>,
    /// `[results] store`: the URL of the store used when none is named.
    pub store: Option<String>,
    /// `[results] connect_timeout`, `read_timeout`, `operation_timeout`,
    /// `max_attempts`: options of the default store, added to its URL (an option the
    /// URL names itself wins).
    pub store_options: BTreeMap<String, String>,
    /// `[tasks] strict_cache`: a cache store that fails fails the task, instead of
    /// being a logged miss or warning; `None` when neither source sets it.
    pub strict_cache: Option<bool>,
    /// `[cache] memory_tier_revalidate_after_ms`: how long a memory-tier hit is served
    /// without asking the store; `None` when neither source sets it (1 s).
    pub memory_tier_revalidate_after: Option<std::time::Duration>,
    /// `[results] cache_dir`: a local disk tier in front of that store (the URL
    /// option `?cache_dir=`, see `backend::TieredBackend`).
    pub cache_dir: Option<String>,
}

static GLOBAL: OnceLock<Settings> = OnceLock::new();

impl Settings {
    /// The settings of this process, read once from the real environment and
    /// `$CAIRN_HOME/config.toml`. A file that cannot be read or parsed is reported
    /// through `tracing` and ignored, so one bad file does not stop every flow; use
    /// [`Settings::load`] to see the error.
    pub fn global() -> &'static Settings {
        GLOBAL.get_or_init(|| {
            let home = default_home(std::env::var_os("CAIRN_HOME").map(PathBuf::from));
            let (settings, errors) = Settings::read(&home, std::env::vars());
            for e in errors {
                tracing::warn!("ignoring one cairn setting: {e}");
            }
            settings
        })
    }

    /// Reads the settings from the real environment and `$CAIRN_HOME/config.toml`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file or variable when a value is not valid.
    pub fn load() -> Result<Settings> {
        let home = default_home(std::env::var_os("CAIRN_HOME").map(PathBuf::from));
        Settings::from_sources(&home, std::env::vars())
    }

    /// Reads the settings from `home/config.toml` (absent is fine) and the given
    /// environment variables (only `CAIRN__*` ones are looked at).
    ///
    /// # Errors
    /// [`Error::Config`] naming the file or variable when a value is not valid.
    pub fn from_sources<K: AsRef<str>, V: AsRef<str>>(
        home: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Settings> {
        let (settings, mut errors) = Settings::read(home, env);
        match errors.is_empty() {
            true => Ok(settings),
            false => Err(errors.remove(0)),
        }
    }

    /// The settings from `home/config.toml` and `env`, leaving out each value that is
    /// not valid, with the errors naming them.
    fn read<K: AsRef<str>, V: AsRef<str>>(
        home: &Path,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> (Settings, Vec<Error>) {
        let home = expand_home(home);
        let mut settings = Settings {
            home: home.clone(),
            ..Settings::default()
        };
        let mut errors = Vec::new();
        let path = home.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => settings.apply_file(&path, &text, &mut errors),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(Error::Config {
                message: format!("cannot read {}: {e}", path.display()),
            }),
        }
        let env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .filter(|(k, _)| k.starts_with("CAIRN__"))
            .collect();
        for (name, value) in &env {
            if let Err(e) = settings.apply_env(name, value) {
                errors.push(e);
            }
        }
        (settings, errors)
    }

    /// The URL of the store persisted results go to when no task or flow names one.
    pub fn default_store_url(&self) -> String {
        let url = match &self.store {
            Some(url) => url.clone(),
            None => format!("file://{}", self.home.join("storage").display()),
        };
        let remote = url.starts_with("s3://") || url.starts_with("gs://");
        let options = self
            .store_options
            .iter()
            .filter(|_| remote)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(self.cache_dir.as_deref().map(|dir| ("cache_dir", dir)));
        let mut url = url;
        for (name, value) in options {
            let named = url
                .split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(name)));
            if !named {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("{name}={value}"));
            }
        }
        url
    }

    fn apply_file(&mut self, path: &Path, text: &str, errors: &mut Vec<Error>) {
        let bad = |what: String| Error::Config {
            message: format!("{}: {what}", path.display()),
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => return errors.push(bad(format!("{e}"))),
        };
        for (section, values) in &table {
            let Some(values) = values.as_table() else {
                errors.push(bad(format!("'{section}' must be a [section]")));
                continue;
            };
            for (key, value) in values {
                let name = format!("{section}.{key}");
                let applied = match name.as_str() {
                    "flows.checkpointing" | "tasks.refresh_cache" | "tasks.strict_cache" => value
                        .as_bool()
                        .map(|flag| self.set_flag(&name, flag))
                        .ok_or_else(|| bad(format!("{name} must be true or false"))),
                    "results.store" => value
                        .as_str()
                        .map(|url| self.store = Some(expand_url(url)))
                        .ok_or_else(|| bad(format!("{name} must be a URL string"))),
                    "results.connect_timeout"
                    | "results.read_timeout"
                    | "results.operation_timeout"
                    | "results.max_attempts" => match value {
                        toml::Value::String(v) => self.set_store_option(&name, v).map_err(bad),
                        toml::Value::Integer(n) => {
                            self.set_store_option(&name, &n.to_string()).map_err(bad)
                        }
                        _ => Err(bad(format!("{name} must be a string or a number"))),
                    },
                    "cache.memory_tier_revalidate_after_ms" => value
                        .as_integer()
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map(|ms| {
                            self.memory_tier_revalidate_after =
                                Some(std::time::Duration::from_millis(ms))
                        })
                        .ok_or_else(|| {
                            bad(format!("{name} must be a whole number of milliseconds"))
                        }),
                    "results.cache_dir" => value
                        .as_str()
                        .map(|dir| self.cache_dir = Some(expand_url(dir)))
                        .ok_or_else(|| bad(format!("{name} must be a directory path"))),
                    _ => {
                        tracing::warn!("{}: unknown setting {name}", path.display());
                        Ok(())
                    }
                };
                if let Err(e) = applied {
                    errors.push(e);
                }
            }
        }
    }

    fn apply_env(&mut self, variable: &str, value: &str) -> Result<()> {
        let name = variable["CAIRN__".len()..]
            .to_ascii_lowercase()
            .replacen("__", ".", 1);
        let shown = crate::template::shorten(value, 80);
        match name.as_str() {
            "flows.checkpointing" | "tasks.refresh_cache" | "tasks.strict_cache" => {
                let flag = parse_flag(value).ok_or_else(|| Error::Config {
                    message: format!("{variable}={shown}: expected true or false"),
                })?;
                self.set_flag(&name, flag);
            }
            "results.store" => self.store = Some(expand_url(value)),
            "results.connect_timeout"
            | "results.read_timeout"
            | "results.operation_timeout"
            | "results.max_attempts" => {
                self.set_store_option(&name, value)
                    .map_err(|why| Error::Config {
                        message: format!("{variable}={shown}: {why}"),
                    })?
            }
            "cache.memory_tier_revalidate_after_ms" => {
                let ms: u64 = value.trim().parse().map_err(|_| Error::Config {
                    message: format!("{variable}={shown}: expected a whole number of milliseconds"),
                })?;
                self.memory_tier_revalidate_after = Some(std::time::Duration::from_millis(ms));
            }
            "results.cache_dir" => self.cache_dir = Some(expand_url(value)),
            _ => tracing::warn!("unknown setting {variable}"),
        }
        Ok(())
    }

    fn set_flag(&mut self, name: &str, flag: bool) {
        match name {
            "flows.checkpointing" => self.checkpointing = Some(flag),
            "tasks.strict_cache" => self.strict_cache = Some(flag),
            _ => self.refresh_cache = Some(flag),
        }
    }

    /// `results.read_timeout` and the like, checked here so that a bad value is
    /// reported where it is set.
    fn set_store_option(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        let option = &name["results.".len()..];
        if option == "max_attempts" {
            value
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} must be a positive number"))?;
        } else {
            crate::backend::parse_duration(value).map_err(|e| format!("{name}: {e}"))?;
        }
        self.store_options
            .insert(option.to_owned(), value.trim().to_owned());
        Ok(())
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn default_home(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| expand_home(&p))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cairn")))
        .unwrap_or_else(|| PathBuf::from(".cairn"))
}

/// A store URL with a leading `~` expanded when it is a plain path.
fn expand_url(url: &str) -> String {
    if url.starts_with('~') {
        expand_home(url).display().to_string()
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            std::fs::write(dir.path().join("config.toml"), config).unwrap();
        }
        dir
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_means_nothing_set() {
        let home = home_with(None);
        let s = Settings::from_sources(home.path(), env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(s.checkpointing, None);
        assert_eq!(s.refresh_cache, None);
        assert_eq!(
            s.default_store_url(),
            format!("file://{}/storage", home.path().display())
        );
    }

    #[test]
    fn the_file_sets_flags_and_store() {
        let home = home_with(Some(
            "[flows]\ncheckpointing = true\n[tasks]\nrefresh_cache = true\n[results]\nstore = \"s3://b/p\"\n",
        ));
        let s = Settings::from_sources(home.path(), env(&[])).unwrap();
        assert_eq!(s.checkpointing, Some(true));
        assert_eq!(s.refresh_cache, Some(true));
        assert_eq!(s.default_store_url(), "s3://b/p");
        let s = Settings::from_sources(
            home.path(),
            [("CAIRN__RESULTS__CACHE_DIR", "/var/cache/cairn")],
        )
        .unwrap();
        assert_eq!(s.cache_dir.as_deref(), Some("/var/cache/cairn"));
        assert_eq!(s.default_store_url(), "s3://b/p?cache_dir=/var/cache/cairn");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let home = home_with(Some("[flows]\ncheckpointing = true\n"));
        let s = Settings::from_sources(
            home.path(),
            env(&[
                ("CAIRN__FLOWS__CHECKPOINTING", "false"),
                ("CAIRN__TASKS__REFRESH_CACHE", "TRUE"),
                ("CAIRN__RESULTS__STORE", "gs://bucket"),
            ]),
        )
        .unwrap();
        assert_eq!(s.checkpointing, Some(false));
        assert_eq!(s.refresh_cache, Some(true));
        assert_eq!(s.store.as_deref(), Some("gs://bucket"));
    }

    #[test]
    fn bad_values_name_their_source() {
        let home = home_with(Some("[flows]\ncheckpointing = \"yes please\"\n"));
        let err = Settings::from_sources(home.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
        assert!(err.to_string().contains("flows.checkpointing"), "{err}");

        let home = home_with(Some("[flows\n"));
        let err = Settings::from_sources(home.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");

        let home = home_with(None);
        let err = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__FLOWS__CHECKPOINTING", "maybe")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("CAIRN__FLOWS__CHECKPOINTING=maybe"),
            "{err}"
        );
    }

    #[test]
    fn store_time_limits_and_strict_cache_are_settings() {
        let home = home_with(Some(
            "[results]\nstore = \"s3://b/p?read_timeout=9s\"\nread_timeout = \"2s\"\nmax_attempts = 2\n[tasks]\nstrict_cache = true\n",
        ));
        let s = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__RESULTS__CONNECT_TIMEOUT", "500ms")]),
        )
        .unwrap();
        assert_eq!(s.strict_cache, Some(true));
        // The URL's own option wins over the setting.
        assert_eq!(
            s.default_store_url(),
            "s3://b/p?read_timeout=9s&connect_timeout=500ms&max_attempts=2"
        );
        let err = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__RESULTS__OPERATION_TIMEOUT", "forever")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("CAIRN__RESULTS__OPERATION_TIMEOUT=forever"),
            "{err}"
        );
        let home = home_with(Some("[results]\nmax_attempts = 0\n"));
        let err = Settings::from_sources(home.path(), env(&[])).unwrap_err();
        assert!(err.to_string().contains("results.max_attempts"), "{err}");
    }

    #[test]
    fn one_bad_setting_is_ignored_alone_and_named() {
        let home = home_with(Some(
            "[tasks]\nrefresh_cache = \"often\"\n[cache]\nmemory_tier_revalidate_after_ms = 250\n",
        ));
        let (s, errors) = Settings::read(
            home.path(),
            env(&[
                ("CAIRN__FLOWS__CHECKPOINTING", "maybe"),
                ("CAIRN__RESULTS__STORE", "s3://kept/prefix"),
            ]),
        );
        // The other settings apply ...
        assert_eq!(s.store.as_deref(), Some("s3://kept/prefix"));
        assert_eq!(
            s.memory_tier_revalidate_after,
            Some(std::time::Duration::from_millis(250))
        );
        // ... and the bad ones are left out, each named once.
        assert_eq!((s.checkpointing, s.refresh_cache), (None, None));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("tasks.refresh_cache"), "{messages:?}");
        assert!(
            messages[1].contains("CAIRN__FLOWS__CHECKPOINTING=maybe"),
            "{messages:?}"
        );
    }

    #[test]
    fn the_revalidation_bound_comes_from_the_environment() {
        let home = home_with(None);
        let s = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__CACHE__MEMORY_TIER_REVALIDATE_AFTER_MS", "0")]),
        )
        .unwrap();
        assert_eq!(
            s.memory_tier_revalidate_after,
            Some(std::time::Duration::ZERO)
        );
        let err = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__CACHE__MEMORY_TIER_REVALIDATE_AFTER_MS", "-1")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("milliseconds"), "{err}");
    }

    #[test]
    fn a_tilde_in_home_and_store_is_the_home_directory() {
        let user_home = std::env::var("HOME").unwrap();
        let home = home_with(None);
        let s = Settings::from_sources(
            home.path(),
            env(&[("CAIRN__RESULTS__STORE", "~/cairn-results")]),
        )
        .unwrap();
        assert_eq!(s.default_store_url(), format!("{user_home}/cairn-results"));
        assert_eq!(
            default_home(Some(PathBuf::from("~/.x"))),
            PathBuf::from(&user_home).join(".x")
        );
    }
}
