//! A build's plan: the recipe's steps with the ones wrenn adds, each
//! step's cache key, and the state (user, directory, environment) the
//! steps carry from one to the next.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;
use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::recipe::{self, Instruction, Recipe};

/// The user every build switches to before the recipe's first step.
pub const BUILD_USER: &str = "wrenn-user";
/// Variables a template never keeps as defaults: the guest sets them.
const NOT_DEFAULTS: [&str; 5] = ["HOME", "PWD", "USER", "LOGNAME", "SHELL"];
/// `PATH` of a build's processes unless the recipe sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    Run {
        command: String,
        timeout: Duration,
    },
    Workdir(String),
    User(String),
    Copy {
        dest: String,
        context: pb::StepContext,
    },
    Env(Vec<(String, String)>),
    Arg {
        name: String,
        default: Option<String>,
    },
    Start(String),
    Ready {
        command: String,
        timeout: Duration,
        interval: Duration,
    },
    /// Post-build: clean-up as root and the template's defaults written.
    Finish,
}

impl Action {
    /// Whether the step changes files (runs in a sandbox and has an image).
    pub fn changes_files(&self) -> bool {
        matches!(
            self,
            Action::Run { .. }
                | Action::Workdir(_)
                | Action::User(_)
                | Action::Copy { .. }
                | Action::Finish
        )
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Line in the recipe; 0 for the steps wrenn adds.
    pub line: usize,
    pub text: String,
    pub action: Action,
}

/// The recipe as a build runs it.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub file: String,
    /// The template the first step starts from.
    pub from: String,
    pub steps: Vec<Step>,
    /// Hex SHA-256 over the recipe's text and its context archives.
    pub recipe_digest: String,
    /// Networks the build's sandboxes may reach beyond the default policy.
    pub allow_out: Vec<String>,
}

/// Checks the request and makes its plan; every error names what is wrong.
pub fn plan(
    req: &pb::BuildTemplateRequest,
    templates: &dyn Fn(&str) -> bool,
) -> Result<Plan, Status> {
    if !wrenn_types::spec::is_template_name(&req.name) {
        return Err(Status::invalid_argument(format!(
            "template name {:?}: expected 1-64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit",
            req.name
        )));
    }
    if req.name == wrenn_types::spec::DEFAULT_TEMPLATE {
        return Err(Status::invalid_argument(
            "template name \"base\": the built-in template cannot be replaced by a build",
        ));
    }
    let allow_out = wrenn_types::spec::check_egress("allow_out", &req.allow_out)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .iter()
        .map(ToString::to_string)
        .collect();
    let file = if req.recipe_file.is_empty() {
        "recipe"
    } else {
        req.recipe_file.as_str()
    };
    let parsed: Recipe = if req.dockerfile {
        recipe::parse_dockerfile(file, &req.recipe)
    } else {
        recipe::parse(file, &req.recipe)
    }
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let from = parsed
        .from
        .clone()
        .or_else(|| (!req.from.is_empty()).then(|| req.from.clone()))
        .unwrap_or_else(|| wrenn_types::spec::DEFAULT_TEMPLATE.to_owned());
    if !templates(&from) {
        return Err(Status::invalid_argument(format!(
            "{file}: FROM {from}: no such template on this host"
        )));
    }
    if from == req.name {
        return Err(Status::invalid_argument(format!(
            "{file}: template {from} cannot be built from itself"
        )));
    }
    let mut contexts: HashMap<u32, pb::StepContext> =
        req.context.iter().map(|c| (c.step, c.clone())).collect();
    let mut digest = Sha256::new();
    digest.update(req.recipe.as_bytes());
    let mut steps = vec![
        Step {
            line: 0,
            text: format!("USER {BUILD_USER}"),
            action: Action::User(BUILD_USER.into()),
        },
        Step {
            line: 0,
            text: format!("WORKDIR /home/{BUILD_USER}"),
            action: Action::Workdir(format!("/home/{BUILD_USER}")),
        },
    ];
    for (i, s) in parsed.steps.iter().enumerate() {
        let action = match &s.instruction {
            Instruction::Run { command, timeout } => Action::Run {
                command: command.clone(),
                timeout: *timeout,
            },
            Instruction::Env(vars) => Action::Env(vars.clone()),
            Instruction::Arg { name, default } => Action::Arg {
                name: name.clone(),
                default: default.clone(),
            },
            Instruction::Workdir(p) => Action::Workdir(p.clone()),
            Instruction::User(u) => Action::User(u.clone()),
            Instruction::Copy { dest, .. } => {
                let context = contexts.remove(&(i as u32)).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{file}:{}:{}: the request carries no sources for this step",
                        s.line, s.column
                    ))
                })?;
                let d = Sha256::digest(&context.archive);
                digest.update(d);
                Action::Copy {
                    dest: dest.clone(),
                    context,
                }
            }
            Instruction::Start(c) => Action::Start(c.clone()),
            Instruction::Ready {
                command,
                timeout,
                interval,
            } => Action::Ready {
                command: command.clone(),
                timeout: *timeout,
                interval: *interval,
            },
        };
        steps.push(Step {
            line: s.line,
            text: s.text.clone(),
            action,
        });
    }
    if let Some(step) = contexts.keys().min() {
        return Err(Status::invalid_argument(format!(
            "context.step {step}: no COPY or ADD step at that index"
        )));
    }
    steps.push(Step {
        line: 0,
        text: "post-build: clean-up, template defaults".into(),
        action: Action::Finish,
    });
    Ok(Plan {
        name: req.name.clone(),
        file: file.to_owned(),
        from,
        steps,
        recipe_digest: hex(&digest.finalize()),
        allow_out,
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first key of a chain: the template a build starts from, by its
/// image's identity (a rebuilt template starts a new chain).
pub fn root_key(from: &str, image: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(image)?;
    let mut h = Sha256::new();
    h.update(b"wrenn-template-build-v1\0");
    h.update(from.as_bytes());
    h.update([0]);
    h.update(
        format!(
            "{}:{}:{}:{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000
        )
        .as_bytes(),
    );
    Ok(hex(&h.finalize()))
}

/// The key of a step: the previous key, the instruction, and for COPY/ADD
/// the digest of the archive the agent received (computed here, not taken
/// from the client), for the post-build step the defaults it writes.
pub fn step_key(prev: &str, step: &Step, extra: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update([0]);
    h.update(step.text.as_bytes());
    h.update([0]);
    if let Action::Copy { context, .. } = &step.action {
        h.update(Sha256::digest(&context.archive));
        h.update([context.single_file as u8]);
    }
    h.update(extra);
    hex(&h.finalize())
}

/// What a template's sandboxes start with (`/etc/wrenn/template.json` in
/// the image, read by the guest; and beside the image for the agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub command: String,
    pub timeout_ms: u64,
    pub interval_ms: u64,
}

impl Defaults {
    pub fn to_proto(&self) -> pb::TemplateDefaults {
        pb::TemplateDefaults {
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            env: self.env.clone().into_iter().collect(),
            start: self.start.clone(),
            ready: self
                .ready
                .as_ref()
                .map(|r| r.command.clone())
                .unwrap_or_default(),
            ready_timeout_ms: self
                .ready
                .as_ref()
                .map_or(0, |r| r.timeout_ms.min(u32::MAX.into()) as u32),
        }
    }

    /// Reads a template's defaults file; a template without one has none.
    pub fn load(path: &Path) -> Result<Defaults, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Defaults::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// The home a user is taken to have when nothing says otherwise (a
/// template's user, a cached `USER` step without a recorded home).
pub fn home_of(user: &str) -> String {
    if user == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{user}")
    }
}

/// The user, directory and environment a build's steps carry.
#[derive(Debug, Clone)]
pub struct State {
    pub user: String,
    pub home: String,
    pub workdir: String,
    /// `ENV`, expanded, in the order set.
    pub env: BTreeMap<String, String>,
    /// `ARG`: the build's only.
    pub args: BTreeMap<String, String>,
    pub start: String,
    pub ready: Option<Ready>,
}

impl State {
    /// The state a build of a template with `parent` defaults begins in:
    /// its user, directory and environment (a template with none starts
    /// as root in `/`).
    pub fn new(parent: &Defaults) -> State {
        let user = if parent.user.is_empty() {
            "root".to_owned()
        } else {
            parent.user.clone()
        };
        let home = home_of(&user);
        State {
            user,
            home,
            workdir: if parent.workdir.is_empty() {
                "/".into()
            } else {
                parent.workdir.clone()
            },
            env: parent.env.clone(),
            args: BTreeMap::new(),
            start: parent.start.clone(),
            ready: parent.ready.clone(),
        }
    }

    /// `$VAR` as a step sees it: ENV, then ARG, then what the guest sets.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(v) = self.env.get(name).or_else(|| self.args.get(name)) {
            return Some(v.clone());
        }
        match name {
            "PATH" => Some(DEFAULT_PATH.into()),
            "HOME" => Some(self.home.clone()),
            "USER" | "LOGNAME" => Some(self.user.clone()),
            _ => None,
        }
    }

    pub fn expand(&self, s: &str) -> Result<String, String> {
        recipe::expand(s, |n| self.lookup(n))
    }

    /// A path made absolute against the working directory.
    pub fn resolve(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_owned()
        } else {
            let base = self.workdir.trim_end_matches('/');
            format!("{base}/{path}")
        }
    }

    /// The variables a step's processes get (ENV over ARG).
    pub fn process_env(&self) -> HashMap<String, String> {
        let mut out: HashMap<String, String> = self.args.clone().into_iter().collect();
        out.extend(self.env.clone());
        out
    }

    /// The template's defaults at the end of the build.
    pub fn defaults(&self) -> Defaults {
        Defaults {
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            env: self
                .env
                .iter()
                .filter(|(k, _)| !NOT_DEFAULTS.contains(&k.as_str()) && !k.starts_with("WRENN_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            start: self.start.clone(),
            ready: self.ready.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(recipe: &str) -> pb::BuildTemplateRequest {
        pb::BuildTemplateRequest {
            name: "t1".into(),
            recipe: recipe.into(),
            recipe_file: "wrenn.recipe".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plans_add_the_build_user_and_the_post_build_step() {
        let p = plan(&req("RUN true\nENV A=1\n"), &|t| t == "base").unwrap();
        let texts: Vec<&str> = p.steps.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "USER wrenn-user",
                "WORKDIR /home/wrenn-user",
                "RUN true",
                "ENV A=1",
                "post-build: clean-up, template defaults"
            ]
        );
        assert_eq!(p.from, "base");
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let err = |r: pb::BuildTemplateRequest| {
            plan(&r, &|t| t == "base").unwrap_err().message().to_owned()
        };
        assert!(
            err(req("FROOM x\n")).starts_with("wrenn.recipe:1:1:"),
            "{}",
            err(req("FROOM x\n"))
        );
        assert_eq!(
            err(req("FROM nope\n")),
            "wrenn.recipe: FROM nope: no such template on this host"
        );
        assert!(
            err(req("COPY a /x\n")).starts_with("wrenn.recipe:1:1: the request carries no sources")
        );
        let mut r = req("RUN true\n");
        r.name = "Bad Name".into();
        assert!(err(r).starts_with("template name \"Bad Name\""));
        let mut r = req("RUN true\n");
        r.name = "base".into();
        assert!(err(r).contains("built-in"));
        let mut r = req("RUN true\n");
        r.allow_out.push("10.0.0.0/33".into());
        assert!(err(r).starts_with("allow_out"), "a bad network is named");
        let mut r = req("RUN true\n");
        r.context.push(pb::StepContext {
            step: 0,
            ..Default::default()
        });
        assert_eq!(err(r), "context.step 0: no COPY or ADD step at that index");
    }

    #[test]
    fn keys_chain_and_follow_the_sources() {
        let mut r = req("COPY a /x\nRUN true\n");
        r.context.push(pb::StepContext {
            step: 0,
            archive: b"one".to_vec(),
            single_file: true,
        });
        let p1 = plan(&r, &|_| true).unwrap();
        r.context[0].archive = b"two".to_vec();
        let p2 = plan(&r, &|_| true).unwrap();
        let k = |p: &Plan, i: usize| step_key("root", &p.steps[i], b"");
        assert_eq!(
            k(&p1, 3),
            k(&p2, 3),
            "same instruction text: same key given the same parent"
        );
        assert_ne!(k(&p1, 2), k(&p2, 2), "the COPY's sources changed");
        assert_ne!(p1.recipe_digest, p2.recipe_digest);
        assert_ne!(
            step_key("a", &p1.steps[3], b""),
            step_key("b", &p1.steps[3], b"")
        );
    }

    #[test]
    fn state_expands_resolves_and_keeps_defaults() {
        let mut s = State::new(&Defaults::default());
        s.env.insert("APP".into(), "/srv/app".into());
        s.args.insert("V".into(), "3".into());
        s.env.insert("HOME".into(), "/nope".into());
        s.workdir = "/home/wrenn-user".into();
        assert_eq!(
            s.expand("$APP/${V}:$PATH").unwrap(),
            format!("/srv/app/3:{DEFAULT_PATH}")
        );
        assert_eq!(s.resolve("app"), "/home/wrenn-user/app");
        assert_eq!(s.resolve("/etc"), "/etc");
        let d = s.defaults();
        assert_eq!(d.env.get("APP").map(String::as_str), Some("/srv/app"));
        assert!(!d.env.contains_key("HOME") && !d.env.contains_key("V"));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Defaults>(&json).unwrap(), d);
    }
}
