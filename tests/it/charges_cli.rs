//! `kassa charge` and `kassa charges list | show | import` as people run them: the real binary
//! against a fresh database and the charges exchange of a fresh prefix (no worker: the jobs wait
//! in the outbox).

use crate::support::binary::{charge_args, kassa, run, text};
use crate::support::{record_customer_with_card, services};
use kassa_broker::Topology;
use kassa_store::{ChargeStatus, Store};
use std::path::Path;
use std::process::Output;

/// A fresh database with one customer whose default card is recorded, and the binary's settings.
struct CliDb {
    url: String,
    store: Store,
    prefix: String,
    customer: String,
}

impl CliDb {
    async fn new() -> Self {
        let url = services::fresh_database_url().await;
        let store = Store::connect(&url, 2).await.unwrap();
        let customer = format!("cus_cli_{}", uuid::Uuid::new_v4().simple());
        let card = format!("pm_cli_{}", uuid::Uuid::new_v4().simple());
        record_customer_with_card(&store, &customer, &card, Some("cli@example.com")).await;
        let prefix = Topology::unique().prefix().to_owned();
        // What a worker declares at start, and what `charge` / `charges import` check for.
        declare_charges_exchange(&prefix).await;
        Self {
            url,
            store,
            prefix,
            customer,
        }
    }

    /// `kassa ARGS` on this database under `prefix`, without a Stripe key.
    async fn kassa_under(&self, prefix: &str, args: &[&str]) -> Output {
        let mut command = kassa(args);
        command
            .env("KASSA_DATABASE_URL", &self.url)
            .env("KASSA_AMQP_PREFIX", prefix)
            .env("KASSA_AMQP_URL", services::amqp_url().await)
            .env_remove("KASSA_STRIPE_API_KEY");
        run(command).await
    }

    /// `kassa ARGS` on this database and prefix, without a Stripe key.
    async fn kassa(&self, args: &[&str]) -> Output {
        self.kassa_under(&self.prefix, args).await
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// Charge jobs waiting in the outbox for this test's `kassa.charges` exchange.
    async fn queued_jobs(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE exchange = $1")
            .bind(format!("{}kassa.charges", self.prefix))
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        self.store.close().await;
        services::drop_database(&self.url).await;
        let _ = Topology::new(self.prefix.clone())
            .delete_at(&services::amqp_url().await)
            .await;
    }
}

async fn declare_charges_exchange(prefix: &str) {
    let connection = lapin::Connection::connect(&services::amqp_url().await, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            Topology::new(prefix).charges_exchange().as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "declared".into()).await;
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

#[tokio::test]
async fn import_reports_bad_rows_by_line_records_good_ones_and_is_idempotent() {
    let db = CliDb::new().await;
    let cus = &db.customer;
    let file = std::env::temp_dir().join(format!("kassa-import-{}.csv", uuid::Uuid::new_v4()));
    // Line numbers are the file's: the header is line 1, and a quoted cell spanning two lines
    // (line 11-12) moves the next row to line 13.
    let csv = format!(
        "customer,amount,currency,reference,payment_method,description\n\
         {cus},1999,usd,imp-1,,March\n\
         {cus},19.99,usd,imp-2,,decimal amount\n\
         {cus},1000,xyz,imp-3,,unknown currency\n\
         {cus},10,usd,imp-4,,below minimum\n\
         cus_nobody,1999,usd,imp-5,,unknown customer\n\
         {cus},1999,usd,,,missing reference\n\
         {cus},1999,usd\n\
         {cus},1000,JPY,imp-9,,yen\n\
         {cus},abc,usd,imp-10,,not a number\n\
         {cus},2500,eur,imp-11,,\"two\nlines\"\n\
         {cus},700,usd,imp-13,,\n\
         {cus},700,usd,imp-14,,{long}\n",
        long = "d".repeat(1001)
    );
    write(&file, &csv);
    let path = file.to_str().unwrap();

    let out = db.kassa(&["charges", "import", path]).await;
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some rows rejected → exit 1\n{stderr}"
    );
    for expected in [
        "line 3: amount:",
        "line 4: currency:",
        "line 5: amount:",
        "line 6: customer: unknown customer cus_nobody",
        "line 7: reference:",
        "line 8: row: 3 columns, the header has 6",
        "line 10: amount:",
        "line 14: description: 1001 characters; Stripe takes at most 1000",
    ] {
        assert!(
            stderr.contains(expected),
            "stderr lacks {expected:?}:\n{stderr}"
        );
    }
    let reported = stderr.lines().filter(|l| l.starts_with("line ")).count();
    assert_eq!(reported, 8, "exactly the bad rows are reported:\n{stderr}");
    assert!(
        stdout.contains("created 4, already existed 0, rejected 8"),
        "{stdout}"
    );
    for reference in ["imp-1", "imp-9", "imp-11", "imp-13"] {
        let charge = db
            .store
            .charge_by_reference(reference)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{reference} recorded"));
        assert_eq!(charge.status, ChargeStatus::Pending);
        assert_eq!(&charge.customer_id, cus);
    }
    let yen = db
        .store
        .charge_by_reference("imp-9")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((yen.amount, yen.currency.as_str()), (1000, "jpy"));
    let multi = db
        .store
        .charge_by_reference("imp-11")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(multi.description.as_deref(), Some("two\nlines"));
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 4);
    assert_eq!(db.queued_jobs().await, 4, "one job per created charge");

    // Again: nothing new, the same rows rejected.
    let out = db.kassa(&["charges", "import", "--quiet", path]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("created 0, already existed 4, rejected 8"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 4);
    assert_eq!(db.queued_jobs().await, 4);

    // A file of good rows only exits 0.
    write(
        &file,
        &format!(
            "customer,amount,currency,reference\n{cus},1999,usd,imp-1\n{cus},1500,usd,imp-20\n"
        ),
    );
    let out = db.kassa(&["charges", "import", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created 1, already existed 1, rejected 0"));

    // A header without a required column is refused before any row.
    write(
        &file,
        &format!("customer,amount,currency\n{cus},1999,usd\n"),
    );
    let out = db.kassa(&["charges", "import", path]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reference"),
        "{}",
        text(&out.stderr)
    );

    std::fs::remove_file(&file).ok();
    db.cleanup().await;
}

#[tokio::test]
async fn charge_records_once_refuses_bad_amounts_and_list_and_show_print_it() {
    let db = CliDb::new().await;
    let cus = db.customer.clone();
    let charge = |amount: &'static str, reference: &'static str| {
        let cus = cus.clone();
        let db = &db;
        async move {
            db.kassa(&[
                "charge",
                "--customer",
                &cus,
                "--amount",
                amount,
                "--currency",
                "usd",
                "--reference",
                reference,
                "--description",
                "April invoice",
            ])
            .await
        }
    };

    let out = charge("1999", "cli-1").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("created charge"), "{stdout}");
    assert!(stdout.contains("$19.99"), "{stdout}");
    assert_eq!(db.queued_jobs().await, 1);

    let out = charge("1999", "cli-1").await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("already exists"));
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 1);
    assert_eq!(db.queued_jobs().await, 1, "nothing queued again");

    for bad in ["19.99", "0", "ten"] {
        let out = charge(bad, "cli-2").await;
        assert!(!out.status.success(), "amount {bad} refused");
        assert!(
            text(&out.stderr).contains("amount:"),
            "the error names the field: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 1);

    let out = db.kassa(&["charges", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    let row = list.lines().find(|l| l.contains("cli-1")).expect(&list);
    for cell in ["pending", "$19.99", cus.as_str()] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    let out = db
        .kassa(&["charges", "list", "--status", "succeeded"])
        .await;
    assert!(text(&out.stdout).contains("no charges"));
    let out = db.kassa(&["charges", "list", "--status", "bogus"]).await;
    assert!(!out.status.success());

    let id = db
        .store
        .charge_by_reference("cli-1")
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string();
    for key in [id.as_str(), "cli-1"] {
        let out = db.kassa(&["charges", "show", key]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        let field = |name: &str, value: &str| format!("{:<25}{value}", format!("{name}:"));
        for line in [
            "id:".to_owned(),
            field("reference", "cli-1"),
            field("amount_display", "$19.99"),
            field("description", "April invoice"),
            field("status", "pending"),
            field("customer", &cus),
            field("attempt_started_at", "-"),
        ] {
            assert!(shown.contains(&line), "{line:?} in\n{shown}");
        }
    }
    let out = db.kassa(&["charges", "show", "no-such-charge"]).await;
    assert!(!out.status.success());

    db.cleanup().await;
}

/// Under a prefix whose `kassa.charges` exchange does not exist (a mistyped
/// `KASSA_AMQP_PREFIX`), `charge` and `charges import` refuse before recording anything: no
/// worker would ever run those charges.
#[tokio::test]
async fn charge_and_import_refuse_a_prefix_whose_exchange_does_not_exist() {
    let db = CliDb::new().await;
    let cus = db.customer.clone();
    let file = std::env::temp_dir().join(format!("kassa-import-{}.csv", uuid::Uuid::new_v4()));
    write(
        &file,
        &format!("customer,amount,currency,reference\n{cus},1999,usd,typo-2\n"),
    );
    let wrong_prefix = format!("{}typo.", db.prefix);
    let charge = db
        .kassa_under(&wrong_prefix, &charge_args(&cus, "1999", "usd", "typo-1"))
        .await;
    let import = db
        .kassa_under(
            &wrong_prefix,
            &["charges", "import", file.to_str().unwrap()],
        )
        .await;
    for out in [&charge, &import] {
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("no exchange \"{wrong_prefix}kassa.charges\""))
                && stderr.contains("KASSA_AMQP_PREFIX")
                && stderr.contains("Nothing was recorded"),
            "{stderr}"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM outbox").await, 0);
    // The passive check created nothing either.
    assert!(
        !kassa_broker::probe::exchange_exists(
            &services::amqp_url().await,
            &format!("{wrong_prefix}kassa.charges")
        )
        .await
        .unwrap(),
        "the check declared nothing"
    );

    // The right prefix goes through.
    let out = db.kassa(&charge_args(&cus, "1999", "usd", "typo-1")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_file(&file).ok();
    db.cleanup().await;
}

#[tokio::test]
async fn import_and_charge_record_in_the_mode_named_and_refuse_customers_of_the_other() {
    // The customer is recorded in test mode; no Stripe key is set, so nothing can be asked.
    let db = CliDb::new().await;
    let cus = &db.customer;
    let file = std::env::temp_dir().join(format!("kassa-import-{}.csv", uuid::Uuid::new_v4()));
    write(
        &file,
        &format!("customer,amount,currency,reference\n{cus},1999,usd,mode-1\n"),
    );
    let path = file.to_str().unwrap();

    let out = db.kassa(&["charges", "import", "--live", path]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line 2: customer: customer {cus} is a test-mode customer; this call is in live mode"
        )),
        "{stderr}"
    );
    assert_eq!(db.count("SELECT count(*) FROM charges").await, 0);

    let out = db.kassa(&["charges", "import", "--test", path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = db
        .kassa(&[
            "charge",
            "--test",
            "--customer",
            cus,
            "--amount",
            "500",
            "--currency",
            "usd",
            "--reference",
            "mode-2",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        db.count("SELECT count(*) FROM charges WHERE NOT livemode")
            .await,
        2,
        "both recorded in test mode"
    );
    // A live-only listing has nothing; a test-only one has both, each saying its mode.
    let live = text(&db.kassa(&["charges", "list", "--live"]).await.stdout);
    assert!(live.contains("no charges"), "{live}");
    let test = text(&db.kassa(&["charges", "list", "--test"]).await.stdout);
    assert!(
        test.lines()
            .filter(|l| l.contains("mode-") && l.contains(" test "))
            .count()
            == 2,
        "{test}"
    );
    let _ = std::fs::remove_file(&file);
    db.cleanup().await;
}
