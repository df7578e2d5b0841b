//! The environment a process starts with.
//!
//! Order, later entries winning: the template's `env` (see below); the
//! agent's own environment at start-up (the sandbox environment the runtime
//! gave it) minus `WRENN_GUEST_*`; `USER`, `HOME`, `LOGNAME` and `SHELL` of the
//! resolved user; `PATH` when still absent; `TERM=xterm-256color` for PTY
//! processes; the request's `envs`. A sandbox made ahead of time (the host's
//! warm pool) gets its id and environment when it is handed out
//! ([`BaseEnv::assign`]): processes started after that see them.
//!
//! # Design
//! The runtime hands the agent its defaults (`PATH`, `HOME=/root`) mixed
//! with the sandbox's own variables from its create request. A template's
//! variable lies between the two: it is used when the agent's environment
//! lacks the name, and for `PATH` also when the agent's value is exactly
//! [`DEFAULT_PATH`] (the runtime's default, not a choice of the sandbox's).
//! A variable given by `Assign` is the sandbox's own and always wins.
//!
//! # Limitations
//! A create request that sets `PATH` to exactly [`DEFAULT_PATH`] cannot be
//! told from the runtime's default: the template's `PATH` wins over it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt as _;

use crate::config::ENV_PREFIX;
use crate::users::User;

/// `PATH` for processes when neither the agent nor the request has one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `TERM` for PTY processes unless the request sets one.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// The sandbox's id, in every process's environment.
pub const SANDBOX_ID: &str = "WRENN_SANDBOX_ID";

/// The agent's environment as captured at start-up, and as assigned since,
/// over the template's.
#[derive(Debug, Default)]
pub struct BaseEnv {
    vars: std::sync::RwLock<Vars>,
    template: BTreeMap<OsString, OsString>,
}

#[derive(Debug, Default)]
struct Vars {
    vars: BTreeMap<OsString, OsString>,
    /// Names set by [`BaseEnv::assign`]: the sandbox's own, never defaults.
    assigned: BTreeSet<OsString>,
}

impl BaseEnv {
    /// Reads the current process environment, dropping `WRENN_GUEST_*`.
    pub fn capture() -> Self {
        Self::from_vars(std::env::vars_os())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let vars = vars
            .into_iter()
            .filter(|(k, _)| !k.as_bytes().starts_with(ENV_PREFIX.as_bytes()))
            .collect();
        Self {
            vars: std::sync::RwLock::new(Vars {
                vars,
                assigned: BTreeSet::new(),
            }),
            template: BTreeMap::new(),
        }
    }

    /// Lays the template's `env` under the sandbox's own (module docs).
    pub fn with_template(mut self, env: &BTreeMap<String, String>) -> Self {
        self.template = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        self
    }

    /// Sets the sandbox's id and `env` over what processes inherit (a
    /// sandbox handed out of the host's pool); returns the id it replaced.
    pub fn assign(&self, id: &str, env: &HashMap<String, String>) -> Option<String> {
        let mut vars = self.vars.write().unwrap_or_else(|e| e.into_inner());
        vars.assigned.extend(env.keys().map(OsString::from));
        vars.vars
            .extend(env.iter().map(|(k, v)| (k.into(), v.into())));
        vars.vars
            .insert(SANDBOX_ID.into(), id.into())
            .map(|old| old.to_string_lossy().into_owned())
    }

    /// The full environment of a new process.
    pub fn for_process(
        &self,
        user: &User,
        pty: bool,
        request: &HashMap<String, String>,
    ) -> BTreeMap<OsString, OsString> {
        let mut env = {
            let vars = self.vars.read().unwrap_or_else(|e| e.into_inner());
            let mut env = vars.vars.clone();
            under_template(&mut env, &vars.assigned, &self.template);
            env
        };
        env.insert("USER".into(), user.name.clone().into());
        env.insert("LOGNAME".into(), user.name.clone().into());
        env.insert("HOME".into(), user.home.clone().into());
        env.insert("SHELL".into(), user.shell.clone().into());
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        if pty {
            env.insert("TERM".into(), DEFAULT_TERM.into());
        }
        env.extend(request.iter().map(|(k, v)| (k.into(), v.into())));
        env
    }
}

/// Adds each `template` variable that `env` lacks, and `PATH` when `env`'s
/// is still the runtime's default and was not assigned.
fn under_template(
    env: &mut BTreeMap<OsString, OsString>,
    assigned: &BTreeSet<OsString>,
    template: &BTreeMap<OsString, OsString>,
) {
    for (name, value) in template {
        let use_template = match env.get(name) {
            None => true,
            Some(current) => name == "PATH" && current == DEFAULT_PATH && !assigned.contains(name),
        };
        if use_template {
            env.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/alice".into(),
            shell: "/bin/zsh".into(),
            groups: vec![1000],
        }
    }

    fn get<'a>(env: &'a BTreeMap<OsString, OsString>, key: &str) -> Option<&'a str> {
        env.get(&OsString::from(key)).and_then(|v| v.to_str())
    }

    #[test]
    fn agent_settings_are_not_inherited() {
        let base = BaseEnv::from_vars([
            ("WRENN_GUEST_LISTEN".into(), "0.0.0.0:1".into()),
            ("SANDBOX".into(), "yes".into()),
            ("HOME".into(), "/".into()),
        ]);
        let env = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&env, "WRENN_GUEST_LISTEN"), None);
        assert_eq!(get(&env, "SANDBOX"), Some("yes"));
        assert_eq!(get(&env, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env, "USER"), Some("alice"));
        assert_eq!(get(&env, "LOGNAME"), Some("alice"));
        assert_eq!(get(&env, "SHELL"), Some("/bin/zsh"));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "TERM"), None);
    }

    #[test]
    fn request_wins_and_pty_gets_term() {
        let base = BaseEnv::from_vars([
            ("PATH".into(), "/sandbox/bin".into()),
            ("TERM".into(), "linux".into()),
        ]);
        let env = base.for_process(&alice(), true, &HashMap::new());
        assert_eq!(get(&env, "PATH"), Some("/sandbox/bin"));
        assert_eq!(get(&env, "TERM"), Some(DEFAULT_TERM));
        let request = HashMap::from([("TERM".to_owned(), "vt100".to_owned())]);
        let env = base.for_process(&alice(), true, &request);
        assert_eq!(get(&env, "TERM"), Some("vt100"));
    }

    fn template(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn template_path_replaces_only_the_default_path() {
        let t = template(&[("PATH", "/opt/bin:/usr/bin")]);
        // The runtime's default: the template's PATH wins.
        let base = BaseEnv::from_vars([("PATH".into(), DEFAULT_PATH.into())]).with_template(&t);
        let env = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&env, "PATH"), Some("/opt/bin:/usr/bin"));
        // No PATH at all (a microVM's init): the template's too.
        let base = BaseEnv::from_vars([]).with_template(&t);
        let env = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&env, "PATH"), Some("/opt/bin:/usr/bin"));
        // The sandbox's create request chose one: it wins.
        let base = BaseEnv::from_vars([("PATH".into(), "/mine/bin".into())]).with_template(&t);
        let env = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&env, "PATH"), Some("/mine/bin"));
        // The request's envs win over all.
        let request = HashMap::from([("PATH".to_owned(), "/req/bin".to_owned())]);
        let env = base.for_process(&alice(), false, &request);
        assert_eq!(get(&env, "PATH"), Some("/req/bin"));
    }

    #[test]
    fn sandbox_variables_win_over_the_template_and_the_user_over_both() {
        let t = template(&[
            ("X", "template"),
            ("ONLY_TEMPLATE", "1"),
            ("HOME", "/template-home"),
            ("USER", "template-user"),
            ("SHELL", "/bin/template"),
        ]);
        let base = BaseEnv::from_vars([
            ("X".into(), "create".into()),
            ("HOME".into(), "/root".into()),
            (SANDBOX_ID.into(), "sb1".into()),
        ])
        .with_template(&t);
        let env = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&env, "X"), Some("create"));
        assert_eq!(get(&env, "ONLY_TEMPLATE"), Some("1"));
        assert_eq!(get(&env, SANDBOX_ID), Some("sb1"));
        assert_eq!(get(&env, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env, "USER"), Some("alice"));
        assert_eq!(get(&env, "SHELL"), Some("/bin/zsh"));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        let request = HashMap::from([("ONLY_TEMPLATE".to_owned(), "2".to_owned())]);
        let env = base.for_process(&alice(), false, &request);
        assert_eq!(get(&env, "ONLY_TEMPLATE"), Some("2"));
    }

    #[test]
    fn assigned_variables_win_over_the_template() {
        let t = template(&[("X", "template"), ("PATH", "/opt/bin"), ("Y", "template")]);
        let base = BaseEnv::from_vars([("PATH".into(), DEFAULT_PATH.into())]).with_template(&t);
        let before = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&before, "X"), Some("template"));
        assert_eq!(get(&before, "PATH"), Some("/opt/bin"));
        // Handed out of the pool with its own X, and PATH set explicitly
        // (even to the default value).
        let assigned = HashMap::from([
            ("X".to_owned(), "assigned".to_owned()),
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ]);
        base.assign("mine", &assigned);
        let after = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&after, "X"), Some("assigned"));
        assert_eq!(get(&after, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&after, "Y"), Some("template"));
    }

    #[test]
    fn assigned_id_and_env_reach_later_processes() {
        let base = BaseEnv::from_vars([
            (SANDBOX_ID.into(), "pooled".into()),
            ("KEEP".into(), "1".into()),
            ("OVER".into(), "old".into()),
        ]);
        let env = HashMap::from([
            ("OVER".to_owned(), "new".to_owned()),
            ("ADDED".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(base.assign("mine", &env).as_deref(), Some("pooled"));
        let got = base.for_process(&alice(), false, &HashMap::new());
        assert_eq!(get(&got, SANDBOX_ID), Some("mine"));
        assert_eq!(get(&got, "KEEP"), Some("1"));
        assert_eq!(get(&got, "OVER"), Some("new"));
        assert_eq!(get(&got, "ADDED"), Some("2"));
    }
}
