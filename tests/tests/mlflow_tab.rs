//! The "DAGs" tab inside the real MLflow UI, through the edge, in headless Chromium.

use std::time::{Duration, Instant};

use concurrent_tests::{free_port, Service, Stack};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

fn chromedriver() -> (Service, u16) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap().keep();
    let driver = Service::start(
        "chromedriver",
        std::process::Command::new("/usr/bin/chromedriver").arg(format!("--port={port}")),
        dir.join("chromedriver.log"),
    );
    (driver, port)
}

async fn wait_for(
    client: &fantoccini::Client,
    css: &str,
    timeout: Duration,
) -> fantoccini::elements::Element {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(e) = client.find(Locator::Css(css)).await {
            return e;
        }
        if Instant::now() > deadline {
            let html = client.source().await.unwrap_or_default();
            panic!(
                "{css} did not appear within {timeout:?}; page:\n{}",
                &html[..html.len().min(3000)]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_dags_tab_appears_in_the_mlflow_ui_and_mounts_the_app() {
    let stack = Stack::shared();
    stack.put_template(&concurrent_tests::example_template("tab-pipeline", 1));
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let caps = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display())]}});
        let mut client = None;
        for _ in 0..50 {
            match ClientBuilder::rustls().unwrap().capabilities(caps.as_object().unwrap().clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let client = client.expect("chromedriver answers");
        // Anonymous visitors get the sign-in page, not MLflow.
        client.goto(&stack.edge_url).await.unwrap();
        assert!(client.source().await.unwrap().contains("API token"));
        // The printed sign-in link: the token travels in the fragment, never to a server log.
        client.goto(&format!("{}/login#token={}", stack.edge_url, stack.token)).await.unwrap();
        let tab = wait_for(&client, r#"aside nav a[data-concurrent="dags"]"#, Duration::from_secs(90)).await;
        assert_eq!(tab.text().await.unwrap().trim(), "DAGs");
        tab.click().await.unwrap();
        let heading = wait_for(&client, "#concurrent-root #templates h2", Duration::from_secs(30)).await;
        assert_eq!(heading.text().await.unwrap(), "Templates");
        wait_for(&client, r#"#concurrent-root tr[data-template="tab-pipeline"]"#, Duration::from_secs(30)).await;
        assert!(client.current_url().await.unwrap().fragment().unwrap_or_default().starts_with("/dags"));
        let current = client.find(Locator::Css(r#"a[data-concurrent="dags"]"#)).await.unwrap();
        assert_eq!(current.attr("aria-current").await.unwrap().as_deref(), Some("page"), "highlighted like its neighbours");
        // MLflow's own pages still work: back to Experiments, the app hides, MLflow shows.
        client.goto(&format!("{}/#/experiments", stack.edge_url)).await.unwrap();
        wait_for(&client, r#"aside nav a[data-concurrent="dags"]"#, Duration::from_secs(60)).await;
        // A deep link on a fresh load mounts the app directly.
        client.goto(&format!("{}/#/dags", stack.edge_url)).await.unwrap();
        wait_for(&client, "#concurrent-root #runs h2", Duration::from_secs(60)).await;
        client.close().await.unwrap();
    });
}
