//! The Worker bundles for Cloudflare without an account (`wrangler deploy --dry-run`).

use std::process::Command;

use concurrent_tests::root;

#[test]
fn the_worker_bundles_for_deployment() {
    let out_dir = tempfile::tempdir().unwrap();
    let root = root();
    let path = format!(
        "{}:{}",
        root.join("node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(root.join("node_modules/.bin/wrangler"))
        .current_dir(&root)
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(out_dir.path())
        .env("PATH", path)
        .env("CONCURRENT_PREBUILT", "1")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .output()
        .expect("wrangler runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "wrangler deploy --dry-run failed:\n{text}"
    );
    assert!(text.contains("--dry-run: exiting now"), "{text}");
    let upload = text
        .lines()
        .find(|l| l.contains("Total Upload"))
        .unwrap_or("Total Upload: ?");
    println!("{upload}");
}
