//! The "DAGs" tab inside the real MLflow UI, through the edge, in headless Chromium.

use std::time::Duration;

use concurrent_tests::browser::Browser;
use concurrent_tests::Stack;
use fantoccini::Locator;

#[test]
fn the_dags_tab_appears_in_the_mlflow_ui_and_mounts_the_app() {
    let stack = Stack::shared();
    stack.put_template(&concurrent_tests::example_template("tab-pipeline", 1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let b = Browser::start("mlflow_tab").await;
        let client = &b.client;
        // Anonymous visitors get the sign-in page, not MLflow.
        client.goto(&stack.edge_url).await.unwrap();
        assert!(client.source().await.unwrap().contains("API token"));
        // The printed sign-in link: the token travels in the fragment, never to a server log.
        b.sign_in(stack).await;
        let tab = b
            .wait_for(
                r#"aside nav a[data-concurrent="dags"]"#,
                Duration::from_secs(90),
            )
            .await;
        assert_eq!(tab.text().await.unwrap().trim(), "DAGs");
        tab.click().await.unwrap();
        let heading = b
            .wait_for("#concurrent-root #templates h2", Duration::from_secs(30))
            .await;
        assert_eq!(heading.text().await.unwrap(), "Templates");
        b.wait_for(
            r#"#concurrent-root tr[data-template="tab-pipeline"]"#,
            Duration::from_secs(30),
        )
        .await;
        assert!(client
            .current_url()
            .await
            .unwrap()
            .fragment()
            .unwrap_or_default()
            .starts_with("/dags"));
        let current = client
            .find(Locator::Css(r#"a[data-concurrent="dags"]"#))
            .await
            .unwrap();
        assert_eq!(
            current.attr("aria-current").await.unwrap().as_deref(),
            Some("page"),
            "highlighted like its neighbours"
        );
        b.screenshot("dags-tab").await;
        // The item survives MLflow re-rendering its sidebar: the GenAI / Model training switch
        // and collapsing the sidebar.
        let dags = r#"document.querySelector('aside nav a[data-concurrent="dags"]')"#;
        let training = client.find(Locator::XPath("//aside//*[normalize-space(text())='Model training']")).await.expect("MLflow's workflow switch");
        training.click().await.unwrap();
        b.wait_js(
            "the DAGs item right after Model registry after the workflow switch",
            &format!("{dags} && {dags}.closest('li').previousElementSibling?.querySelector('a[href^=\"#/models\"]')"),
            Duration::from_secs(20),
        )
        .await;
        let collapse = b.wait_for(r#"[data-component-id="mlflow_header.toggle_sidebar_button"]"#, Duration::from_secs(20)).await;
        collapse.click().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.wait_js("the DAGs item in the collapsed sidebar", &format!("{dags} && {dags}.getBoundingClientRect().width > 0"), Duration::from_secs(20)).await;
        b.screenshot("dags-tab-collapsed").await;
        collapse.click().await.unwrap();
        // MLflow's own pages still work: back to Experiments, the app hides, MLflow shows.
        client
            .goto(&format!("{}/#/experiments", stack.edge_url))
            .await
            .unwrap();
        b.wait_for(
            r#"aside nav a[data-concurrent="dags"]"#,
            Duration::from_secs(60),
        )
        .await;
        // Deep links on a fresh load mount the app directly: the list, and a template.
        client
            .goto(&format!("{}/#/dags", stack.edge_url))
            .await
            .unwrap();
        b.wait_for("#concurrent-root #runs h2", Duration::from_secs(60))
            .await;
        client
            .goto(&format!("{}/#/dags/templates/tab-pipeline", stack.edge_url))
            .await
            .unwrap();
        b.wait_for(
            r#"#concurrent-root [data-node="prepare"]"#,
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            b.count("#concurrent-root [data-designer]").await,
            1,
            "mounted once"
        );
        b.client.clone().close().await.unwrap();
    });
}

#[test]
fn a_reader_signed_in_through_a_crafted_link_stays_on_this_site_and_reads_mlflow() {
    let stack = Stack::shared();
    let (status, created) = stack.api(
        "POST",
        "/api/v1/tokens",
        Some(&serde_json::json!({"name": "ui-reader", "role": "reader"})),
    );
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    stack.mlflow_api(
        "POST",
        "experiments/create",
        Some(&serde_json::json!({"name": "seen-by-a-reader"})),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let b = Browser::start("mlflow_tab_reader").await;
        let client = &b.client;
        // `//evil.example/x` is a path here, and another site to `location.replace`.
        client
            .goto(&format!("{}//evil.example/x", stack.edge_url))
            .await
            .unwrap();
        b.fill("#t", &token).await;
        client
            .find(Locator::Css("form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait_js(
            "the sign-in leaves the login page",
            "!document.getElementById('t')",
            Duration::from_secs(20),
        )
        .await;
        let url = client.current_url().await.unwrap();
        assert_eq!(
            url.host_str(),
            Some("127.0.0.1"),
            "sign-in returned to {url}, not to this site"
        );
        // MLflow's UI works for a reader: the experiments list shows.
        client
            .goto(&format!("{}/#/experiments", stack.edge_url))
            .await
            .unwrap();
        b.wait_js(
            "the experiments list, as a reader",
            "document.body.innerText.includes('seen-by-a-reader')",
            Duration::from_secs(90),
        )
        .await;
        b.screenshot("reader-experiments").await;
        b.client.clone().close().await.unwrap();
    });
}
