//! End-to-end tests of the `wrenn` binary (issue 4 §7, issue 5 §13): the
//! real `wrenn up` (or its components as separate processes), real namespace
//! sandboxes with the real guest, driven through the CLI as a person would.
//!
//! Needs root, the static guest (`cargo build --release -p wrenn-guest
//! --target x86_64-unknown-linux-musl`), Debian's `chromium` and `npm` for
//! the browser test (`scripts/setup --tests`), and for the PostgreSQL half
//! `WRENN_TEST_DATABASE_URL` (`export WRENN_TEST_DATABASE_URL=$(scripts/postgres start)`).
//! Run with `cargo test -p wrenn-cli --release --test e2e`.
//!
//! The same suite runs against a SQLite store (`sqlite::*`) and a PostgreSQL
//! store (`postgres::*`), each on one `wrenn up` shared by its tests; every
//! test makes its own sandboxes. Prefix `wrenn-te`; slots: 3000–3099 the
//! SQLite platform, 3100–3199 the PostgreSQL platform, 3200–3299 the agent
//! restart tests, 3300–3399 the harness's own tests and the start-up failures, 3400–3419
//! the supervision tests, 3420–3439 the template builds.

#[path = "../common/mod.rs"]
mod common;

mod browse;
mod exec;
mod files;
mod harness;
mod keys;
mod lifecycle;
mod pty;
mod restart;
mod startup;
mod stores;
mod supervise;
mod templates;

/// One test per entry and store: `sqlite::<name>` and `postgres::<name>`,
/// each calling `<body>(&Platform)` on that store's shared platform.
macro_rules! store_suite {
    ($($name:ident => $body:path),* $(,)?) => {
        mod sqlite {
            $(#[test] #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"] fn $name() { let s = crate::stores::sqlite(); $body(&s.platform); })*
        }
        mod postgres {
            $(#[test] #[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"] fn $name() { let s = crate::stores::postgres(); $body(&s.platform); })*
        }
    };
}

/// Template builds (issue 21), on a platform of their own (slots 3420–3439)
/// so that the checks for what a build leaves see no other test's work.
#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn templates_build_cache_fail_cleanly_and_start_apps() {
    let p = common::Platform::start(common::PlatformOptions::new("wrenn-te", 3420..=3439));
    templates::copy_workdir_defaults_and_cache(&p);
    templates::failures_leave_nothing(&p);
    templates::start_and_ready_hold_create(&p);
    p.stop();
}

store_suite! {
    create_with_json_env_meta_and_ls_filters => crate::lifecycle::create_json_env_meta_and_filters,
    bad_input_is_named_and_the_service_keeps_serving => crate::lifecycle::bad_input,
    pause_freezes_a_counting_process_and_resume_continues_it => crate::lifecycle::pause_resume,
    ttl_expiry_destroys_the_sandbox => crate::lifecycle::ttl_expiry,
    wrong_api_key_is_refused_and_reveals_nothing => crate::lifecycle::wrong_key,
    exec_exit_codes_streams_env_user_and_cwd => crate::exec::exec,
    pty_resize_ctrl_c_exit_code_and_ctrl_d => crate::pty::pty,
    files_round_trip => crate::files::round_trip,
    api_keys_create_ls_rm_for_grpc_and_rest => crate::keys::create_ls_rm,
}
