//! The whole system in this process, on a scratch database, with people and posts
//! to call with.

use std::error::Error;

use agora_proto::auth::v1::{
    CreateUserRequest, LoginRequest, auth_service_client::AuthServiceClient,
    user_service_client::UserServiceClient,
};
use futures::future::try_join_all;
use service_kit::DatabaseArgs;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, transport::Channel};

pub const PASSWORD: &str = "correct horse battery";
/// Posts seeded for listing; each caller also likes one of them.
const POSTS: i32 = 200;

pub struct System {
    /// The scratch database, as the services use it (for the SQL ceiling).
    pub pool: sqlx::PgPool,
    /// The id of the user who owns every seeded post (caller 0).
    pub owner_id: uuid::Uuid,
    /// The gateway's gRPC port.
    pub edge: Channel,
    /// posts-service itself, past the gateway.
    pub posts_direct: Channel,
    pub http: reqwest::Client,
    pub http_base: String,
    /// One access token per caller.
    pub tokens: Vec<String>,
    pub post_ids: Vec<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin: PgConnectOptions,
    database: String,
}

impl System {
    pub fn email(caller: usize) -> String {
        format!("caller{caller}@bench.example")
    }

    pub async fn start(admin_url: &str, callers: usize) -> Result<Self, Box<dyn Error>> {
        if callers > POSTS as usize {
            return Err(format!("at most {POSTS} concurrent callers").into());
        }
        let admin: PgConnectOptions = admin_url.parse()?;
        let database = format!("agora_bench_{}", uuid::Uuid::now_v7().simple());
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&database);
        let pool = service_kit::database::connect(&DatabaseArgs::new(url.as_str())).await?;

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let config = gateway::Config::ephemeral();
        let services = gateway::embedded::EmbeddedServices::bind(
            &pool,
            config.auth.clone(),
            &config.common.limits,
        )
        .await?;
        let urls = services.urls.clone();
        let mut running = services.spawn(stopped.clone());
        tasks.push(tokio::spawn(async move {
            while running.join_next().await.is_some() {}
        }));
        let config = gateway::Config {
            auth_service_url: Some(urls.auth.clone()),
            posts_service_url: Some(urls.posts.clone()),
            votes_service_url: Some(urls.votes),
            ..config
        };
        let gateway = gateway::build(&config).await?;
        let (edge_address, http_address) = (gateway.grpc_addr(), gateway.http_addr());
        let mut gateway_stopped = stopped;
        tasks.push(tokio::spawn(async move {
            let _ = gateway
                .run_until(async move {
                    let _ = gateway_stopped.wait_for(|s| *s).await;
                })
                .await;
        }));

        let edge = Channel::from_shared(format!("http://{edge_address}"))?
            .connect()
            .await?;
        let posts_direct = Channel::from_shared(urls.posts)?.connect().await?;
        let tokens = try_join_all((0..callers).map(|caller| sign_up(edge.clone(), caller))).await?;
        let owner =
            sqlx::query_scalar::<_, uuid::Uuid>("select id from auth.users where email = $1")
                .bind(Self::email(0))
                .fetch_one(&pool)
                .await?;
        let post_ids = sqlx::query_scalar::<_, uuid::Uuid>(
            "insert into posts.posts (id, owner_id, title, content)
             select gen_random_uuid(), $1, 'Benchmark post ' || n, repeat('Some words. ', 40)
               from generate_series(1, $2) as n
             returning id",
        )
        .bind(owner)
        .bind(POSTS)
        .fetch_all(&pool)
        .await?
        .into_iter()
        .map(|id| id.to_string())
        .collect();
        Ok(Self {
            pool,
            owner_id: owner,
            edge,
            posts_direct,
            http: reqwest::Client::new(),
            http_base: format!("http://{http_address}"),
            tokens,
            post_ids,
            stop,
            tasks,
            admin,
            database,
        })
    }

    /// `message` with the caller's token.
    pub fn as_caller<T>(&self, caller: usize, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let value = format!("Bearer {}", self.tokens[caller])
            .parse()
            .expect("a token is valid metadata");
        request.metadata_mut().insert("authorization", value);
        request
    }

    /// Stops everything and drops the scratch database.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Ok(mut conn) = PgConnection::connect_with(&self.admin).await {
            let drop = format!("drop database if exists {} with (force)", self.database);
            if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
            {
                eprintln!(
                    "could not drop the scratch database {}: {error}",
                    self.database
                );
            }
        }
    }
}

async fn sign_up(edge: Channel, caller: usize) -> Result<String, tonic::Status> {
    let email = System::email(caller);
    let user = CreateUserRequest {
        email: email.clone(),
        password: PASSWORD.to_owned(),
        request_id: String::new(),
    };
    UserServiceClient::new(edge.clone())
        .create_user(user)
        .await?;
    let login = LoginRequest {
        email,
        password: PASSWORD.to_owned(),
    };
    Ok(AuthServiceClient::new(edge)
        .login(login)
        .await?
        .into_inner()
        .access_token)
}
