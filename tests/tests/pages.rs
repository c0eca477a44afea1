//! The schedules and tokens pages in headless Chromium against the real stack: what an admin
//! creates, pauses, resumes, deletes and revokes there is what the API then does; a reader sees
//! neither the tokens nor the buttons.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::Stack;
use serde_json::Value;

const SECS: Duration = Duration::from_secs(30);

fn api(stack: &Stack, method: &str, path: &str) -> (u16, Value) {
    tokio::task::block_in_place(|| stack.api(method, path, None))
}

fn schedule(stack: &Stack, name: &str) -> Option<Value> {
    let (status, list) = api(stack, "GET", "/api/v1/schedules");
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

#[test]
fn schedules_are_created_with_a_preview_paused_resumed_and_deleted_in_the_ui() {
    let stack = Stack::shared();
    stack.put_template(&concurrent_tests::example_template("scheduled-pipeline", 3));
    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("pages_schedules", (1440, 900)).await;
        b.sign_in(stack).await;
        b.wait_for(r#"aside nav a[data-concurrent="dags"]"#, Duration::from_secs(90)).await.click().await.unwrap();
        b.wait_for(r#"#concurrent-root a[data-tab="Schedules"]"#, SECS).await.click().await.unwrap();
        b.wait_for(r#"[data-action="new-schedule"]"#, SECS).await.click().await.unwrap();
        b.fill(r#"[data-new-schedule] input[name="name"]"#, "every-quarter-hour").await;
        let select = b.wait_for(r#"[data-new-schedule] select[name="template"]"#, SECS).await;
        b.wait_js("the templates offered", "document.querySelector('[data-new-schedule] option[value=\"scheduled-pipeline\"]')", SECS).await;
        select.select_by_value("scheduled-pipeline").await.unwrap();
        // The template's run parameters appear with their defaults.
        b.wait_js("the template's parameters", "document.querySelector('[data-new-schedule] input[name=\"param-parts\"]')?.value === '4'", SECS).await;

        // A bad cron is explained and cannot be saved.
        b.fill(r#"[data-new-schedule] input[name="cron"]"#, "61 * * * *").await;
        let why = b.text("[data-cron-preview] .cc-error").await;
        assert!(why.contains("61 * * * *"), "{why}");
        let create = b.wait_for(r#"[data-action="create-schedule"]"#, SECS).await;
        assert!(create.attr("disabled").await.unwrap().is_some(), "a bad cron cannot be saved");

        // A good one shows what it means and its next five times, 15 minutes apart.
        b.fill(r#"[data-new-schedule] input[name="cron"]"#, "*/15 * * * *").await;
        b.wait_js("five ticks shown", "document.querySelectorAll('[data-cron-preview] [data-tick]').length === 5", SECS).await;
        let ticks: Vec<u64> = b.client.execute("return [...document.querySelectorAll('[data-cron-preview] [data-tick]')].map((e) => Number(e.dataset.tick))", vec![]).await.unwrap()
            .as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert!(ticks.windows(2).all(|w| w[1] - w[0] == 15 * 60_000), "{ticks:?}");
        assert_eq!(ticks[0] % (15 * 60_000), 0, "{ticks:?}");
        let words = b.text("[data-cron-preview] strong").await;
        assert!(words.contains("15") && words.contains("UTC"), "the cron in words: {words}");
        b.screenshot("new-schedule").await;
        b.wait_for(r#"[data-action="create-schedule"]"#, SECS).await.click().await.unwrap();

        let row = r#"tr[data-schedule="every-quarter-hour"]"#;
        b.wait_for(row, SECS).await;
        let stored = schedule(stack, "every-quarter-hour").expect("created through the UI");
        assert_eq!(stored["cron"], "*/15 * * * *");
        assert_eq!(stored["template"], "scheduled-pipeline");
        assert_eq!(stored["parameters"]["parts"], "4");
        let shown: u64 = b.wait_for(&format!("{row} [data-next-fire]"), SECS).await.attr("data-next-fire").await.unwrap().unwrap().parse().unwrap();
        assert_eq!(shown, stored["nextFire"].as_u64().unwrap(), "the list shows the next fire time");
        assert!(ticks.contains(&shown), "the preview's first ticks include the stored next fire: {shown} in {ticks:?}");
        b.screenshot("schedules").await;

        // Pause, resume.
        b.wait_for(&format!("{row} [data-action=\"pause\"]"), SECS).await.click().await.unwrap();
        b.wait_for(&format!(r#"{row}[data-state="paused"]"#), SECS).await;
        assert_eq!(schedule(stack, "every-quarter-hour").unwrap()["paused"], true);
        b.wait_for(&format!("{row} [data-action=\"resume\"]"), SECS).await.click().await.unwrap();
        b.wait_for(&format!(r#"{row}[data-state="active"]"#), SECS).await;
        assert!(schedule(stack, "every-quarter-hour").unwrap().get("paused").is_none());

        // Delete asks first.
        b.wait_for(&format!("{row} [data-action=\"delete\"]"), SECS).await.click().await.unwrap();
        let question = b.client.get_alert_text().await.unwrap();
        assert!(question.contains("every-quarter-hour"), "{question}");
        b.client.accept_alert().await.unwrap();
        b.wait_js("the row gone", &format!("!document.querySelector('{}')", row.replace('\'', "\\'")), SECS).await;
        assert!(schedule(stack, "every-quarter-hour").is_none());
        b.client.clone().close().await.unwrap();
    });
}

#[test]
fn tokens_are_created_shown_once_and_revoked_in_the_ui_and_hidden_from_readers() {
    let stack = Stack::shared();
    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("pages_tokens", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/tokens", stack.edge_url)).await.unwrap();
        b.fill(r#"[data-new-token] input[name="name"]"#, "page-reader").await;
        b.wait_for(r#"[data-new-token] select[name="role"]"#, SECS).await.select_by_value("reader").await.unwrap();
        b.wait_for(r#"[data-action="create-token"]"#, SECS).await.click().await.unwrap();
        let secret_box = b.wait_for(r#"[data-secret-for="page-reader"] input[data-secret]"#, SECS).await;
        let secret = secret_box.prop("value").await.unwrap().unwrap();
        assert!(secret.len() >= 32, "{secret}");
        b.wait_for(r#"[data-secret-for="page-reader"] [data-action="copy"]"#, SECS).await.click().await.unwrap();
        b.wait_js("the copy button answers", "document.querySelector('[data-secret-for=\"page-reader\"] .cc-ok, [data-secret-for=\"page-reader\"] .cc-hint')", SECS).await;
        b.wait_for(r#"tr[data-token="page-reader"]"#, SECS).await;
        b.screenshot("tokens").await;
        // The secret is in no list.
        let (_, listed) = api(stack, "GET", "/api/v1/tokens");
        assert!(!listed.to_string().contains(&secret));
        // It works, as a reader.
        let (status, me) = tokio::task::block_in_place(|| stack.api_as(Some(&secret), "GET", "/api/v1/me", None));
        assert_eq!((status, me["role"].as_str()), (200, Some("reader")), "{me}");

        // A reader sees no tokens tab, a refusal on the tokens page, and no schedule buttons.
        let r = Browser::start("pages_tokens_reader").await;
        r.sign_in_with(stack, &secret).await;
        r.client.goto(&format!("{}/#/dags/schedules", stack.edge_url)).await.unwrap();
        r.wait_js("signed in as the reader", "document.querySelector('[data-me]')?.textContent.includes('page-reader (reader)')", Duration::from_secs(90)).await;
        assert_eq!(r.count(r#"a[data-tab="Tokens"]"#).await, 0);
        assert_eq!(r.count(r#"[data-action="new-schedule"]"#).await, 0);
        r.client.goto(&format!("{}/#/dags/tokens", stack.edge_url)).await.unwrap();
        let refusal = r.text("#concurrent-root [role=alert]").await;
        assert!(refusal.contains("Only admins"), "{refusal}");
        assert_eq!(r.count("[data-new-token]").await, 0);
        r.client.clone().close().await.unwrap();

        // Revoking asks first; then the token is refused.
        b.wait_for(r#"tr[data-token="page-reader"] [data-action="revoke"]"#, SECS).await.click().await.unwrap();
        assert!(b.client.get_alert_text().await.unwrap().contains("page-reader"));
        b.client.accept_alert().await.unwrap();
        b.wait_js("the row gone", "!document.querySelector('tr[data-token=\"page-reader\"]')", SECS).await;
        let (status, _) = tokio::task::block_in_place(|| stack.api_as(Some(&secret), "GET", "/api/v1/me", None));
        assert_eq!(status, 401, "a revoked token is refused");
        b.client.clone().close().await.unwrap();
    });
}

/// A page's code may come in a module of its own (scripts/build.sh splits the bundle); leaving
/// the page must still end it: no more polling of the run once the list is shown.
#[test]
fn a_run_view_left_for_the_list_stops_polling() {
    let stack = Stack::shared();
    stack.put_template(&concurrent_tests::example_template("left-pipeline", 1));
    // No agent serves this cluster: the run stays queued, so its view would poll forever.
    let id = stack.start_run(
        &serde_json::json!({"template": "left-pipeline", "cluster": "nobody-serves-this"}),
    );
    let runtime = concurrent_tests::browser::runtime();
    runtime.block_on(async {
        let b = Browser::start_sized("pages_left", (1440, 900)).await;
        b.sign_in(stack).await;
        b.client.goto(&format!("{}/#/dags/runs/{id}", stack.edge_url)).await.unwrap();
        b.wait_for("[data-run-view]", Duration::from_secs(60)).await;
        // Room for every entry: a full buffer would stop the count and pass this test.
        b.keep_fetches().await;
        let polls = format!("/runs/{id}");
        b.wait_js("the run view polling", &format!("{} >= 3", Browser::fetches_js(&polls)), SECS).await;
        // A panic while the page is torn down stops the whole app (wasm aborts): caught here.
        b.client.execute("window.__errors = []; const e = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); e(...a) };", vec![]).await.unwrap();
        b.client.execute("location.hash = '#/dags'", vec![]).await.unwrap();
        b.wait_for("#concurrent-root #templates h2", SECS).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = b.fetches(&polls).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = b.fetches(&polls).await;
        assert_eq!(before, after, "the run view went on polling its run after the list was shown");
        let errors = b.client.execute("return window.__errors", vec![]).await.unwrap();
        assert_eq!(errors, serde_json::json!([]), "errors while leaving the run view");
        // And the app still answers: another page opens.
        b.client.execute("location.hash = '#/dags/schedules'", vec![]).await.unwrap();
        b.wait_for(r#"[data-action="new-schedule"]"#, SECS).await;
    });
}
