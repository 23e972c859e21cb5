//! Client authentication to poolside: the client password (inline and from a
//! file, re-read on reload), ACL-style users, what an unauthenticated client
//! may do, the failure counter, and the refusal to listen remotely without it.

mod common;

use common::raw::{RawClient, Reply};
use common::{both_modes, start_poolside, RedisServer};
use poolside::config::{Config, Overrides, PoolMode, Secret};

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unauthenticated_clients_may_only_auth_hello_quit_and_ping(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.client_password = Some(Secret::new("pw"))
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            client.command(&["PING"]).await,
            Reply::Simple("PONG".into())
        );
        assert_eq!(client.command(&["ping", "hi"]).await, Reply::bulk("hi"));
        for refused in [
            &["GET", "k"][..],
            &["SET", "k", "v"],
            &["SELECT", "1"],
            &["MULTI"],
        ] {
            let err = client.command(refused).await.expect_error();
            assert_eq!(err, "NOAUTH Authentication required.", "{refused:?}");
        }
        let err = client.command(&["HELLO", "2"]).await.expect_error();
        assert!(err.starts_with("NOAUTH"), "{err}");
        // Nothing reached Redis on the client's behalf.
        assert_eq!(poolside.pool_snapshot().checkouts_total, 0);
        client.command(&["QUIT"]).await.expect_ok();
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_passwords_are_refused_like_redis_and_counted(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.client_password = Some(Secret::new("pw"))
        })
        .await;
        let mut client = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            client.command(&["AUTH", "nope"]).await.expect_error(),
            WRONGPASS
        );
        assert_eq!(
            client
                .command(&["AUTH", "default", "nope"])
                .await
                .expect_error(),
            WRONGPASS
        );
        assert_eq!(
            client
                .command(&["AUTH", "someone", "pw"])
                .await
                .expect_error(),
            WRONGPASS
        );
        let err = client
            .command(&["HELLO", "2", "AUTH", "default", "x"])
            .await;
        assert_eq!(err.expect_error(), WRONGPASS);
        assert_eq!(poolside.stats().auth_failures_total(), 4);
        client.command(&["AUTH", "default", "pw"]).await.expect_ok();
        client.command(&["SET", "k", "v"]).await.expect_ok();
        let mut hello = RawClient::connect(poolside.client_addr).await;
        hello
            .command(&["HELLO", "2", "AUTH", "default", "pw"])
            .await
            .expect_array();
        assert_eq!(hello.command(&["GET", "k"]).await, Reply::bulk("v"));
        assert_eq!(poolside.stats().auth_failures_total(), 4);
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acl_style_users_authenticate_with_name_and_password(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let poolside = start_poolside(&redis, mode, |c| {
            c.client_users.insert("app".into(), Secret::new("app-pw"));
            c.client_users
                .insert("batch".into(), Secret::new("batch-pw"));
        })
        .await;
        let mut app = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            app.command(&["GET", "k"]).await.expect_error(),
            "NOAUTH Authentication required."
        );
        // No client_password: the default user has none to match.
        assert_eq!(
            app.command(&["AUTH", "app-pw"]).await.expect_error(),
            WRONGPASS
        );
        assert_eq!(
            app.command(&["AUTH", "app", "batch-pw"])
                .await
                .expect_error(),
            WRONGPASS
        );
        app.command(&["AUTH", "app", "app-pw"]).await.expect_ok();
        app.command(&["SET", "k", "v"]).await.expect_ok();
        let mut batch = RawClient::connect(poolside.client_addr).await;
        batch
            .command(&["HELLO", "2", "AUTH", "batch", "batch-pw"])
            .await
            .expect_array();
        assert_eq!(batch.command(&["GET", "k"]).await, Reply::bulk("v"));
        // RESET forgets who the client was.
        assert_eq!(
            batch.command(&["RESET"]).await,
            Reply::Simple("RESET".into())
        );
        assert!(batch
            .command(&["GET", "k"])
            .await
            .expect_error()
            .starts_with("NOAUTH"));
        poolside.shutdown().await;
    }
}

both_modes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_password_file_is_read_at_start_and_on_reload(mode: PoolMode) {
        let redis = RedisServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client-password");
        std::fs::write(&file, "first-pw\n").unwrap();
        let poolside = start_poolside(&redis, mode, |c| {
            c.client_password_file = Some(file.clone())
        })
        .await;
        let mut before = RawClient::connect(poolside.client_addr).await;
        before.command(&["AUTH", "first-pw"]).await.expect_ok();

        std::fs::write(&file, "second-pw").unwrap();
        assert_eq!(poolside.reload_secrets(), 1);
        let mut after = RawClient::connect(poolside.client_addr).await;
        assert_eq!(
            after.command(&["AUTH", "first-pw"]).await.expect_error(),
            WRONGPASS
        );
        after.command(&["AUTH", "second-pw"]).await.expect_ok();
        // A client authenticated before the rotation stays authenticated.
        before.command(&["SET", "k", "v"]).await.expect_ok();

        // An unreadable file keeps the password in force.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(poolside.reload_secrets(), 0);
        let mut again = RawClient::connect(poolside.client_addr).await;
        again.command(&["AUTH", "second-pw"]).await.expect_ok();
        poolside.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_file_stops_the_start() {
    let mut config = Config::for_tests("redis://127.0.0.1:1");
    config.client_password_file = Some("/nonexistent/poolside-client-password".into());
    let err = poolside::app::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("client_password_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::result_large_err)] // figment::Error, from Jail's closure
async fn remote_listen_without_client_auth_is_refused() {
    let mut config = Config::for_tests("redis://127.0.0.1:1");
    config.listen = "0.0.0.0:0".into();
    let err = poolside::app::start(config).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("listen") && text.contains("allow_unauthenticated_remote"),
        "{text}"
    );

    figment::Jail::expect_with(|jail| {
        jail.set_env("POOLSIDE_LISTEN", "0.0.0.0:6380");
        let err = Config::load(&Overrides::default()).expect_err("refused");
        assert_eq!(err.key, "listen");
        assert_eq!(err.source, "POOLSIDE_LISTEN");
        jail.set_env("POOLSIDE_CLIENT_PASSWORD", "0123");
        let (config, _) = Config::load(&Overrides::default()).expect("accepted with a password");
        assert_eq!(config.client_password.unwrap().expose(), "0123");
        jail.clear_env();
        jail.set_env("POOLSIDE_LISTEN", "0.0.0.0:6380");
        jail.set_env("POOLSIDE_ALLOW_UNAUTHENTICATED_REMOTE", "true");
        Config::load(&Overrides::default()).expect("accepted when explicitly allowed");
        Ok(())
    });
}
