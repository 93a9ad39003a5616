//! `auth-service rotate-signing-key` and `retire-signing-key`: one change to the
//! keys in the database, printed, then exit. Running replicas pick it up at
//! their next reload.

use std::process::ExitCode;

use access_token::DEFAULT_MAX_LIFETIME;
use time::format_description::well_known::Rfc3339;

use crate::{
    config::{Config, KeyCommand},
    keys,
};

/// How long after a key stops signing it stays published: the longest token
/// lifetime, plus a minute for clocks and for replicas that reload late.
const RETIRE_AFTER_LAST_SIGNATURE: std::time::Duration =
    DEFAULT_MAX_LIFETIME.saturating_add(std::time::Duration::from_secs(60));

pub async fn run(config: &Config, command: &KeyCommand) -> ExitCode {
    match apply(config, command).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("auth-service: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn apply(
    config: &Config,
    command: &KeyCommand,
) -> Result<String, Box<dyn std::error::Error>> {
    if config.auth.signing_key_file.is_some() {
        return Err(
            "SIGNING_KEY_FILE is set: that key is not kept in the database; \
                    replace the file and restart instead"
                .into(),
        );
    }
    let seal = keys::KeySeal::configured(&config.auth)?;
    let pool = service_kit::database::connect(&config.common.database).await?;
    let mut conn = pool.acquire().await?;
    let at =
        |time: time::OffsetDateTime| time.format(&Rfc3339).unwrap_or_else(|_| time.to_string());
    Ok(match command {
        KeyCommand::RotateSigningKey { sign_after_secs } => {
            let rotation = keys::rotate(
                &mut conn,
                seal.as_deref(),
                std::time::Duration::from_secs(*sign_after_secs),
                RETIRE_AFTER_LAST_SIGNATURE,
            )
            .await?;
            let mut report = format!(
                "new key {} published now, signing from {}",
                rotation.kid,
                at(rotation.sign_time)
            );
            for (kid, retire_time) in rotation.retiring {
                report += &format!(
                    "\nkey {kid} stops signing then, withdrawn at {}",
                    at(retire_time)
                );
            }
            report
        }
        KeyCommand::RetireSigningKey { kid } => {
            keys::retire_now(&mut conn, kid).await?;
            format!(
                "key {kid} withdrawn; replicas stop publishing it within SIGNING_KEYS_RELOAD_SECS \
                 and verifiers stop trusting it within TOKEN_KEYS_REFRESH_SECS after that"
            )
        }
    })
}
