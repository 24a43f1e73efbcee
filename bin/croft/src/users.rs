//! `croft migrate` and `croft user ...`: account administration from the command line
//! (registration is external to the game, as the architecture says).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use auth::Passwords;
use store::{DatabaseArgs, PoolSettings, Store};

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account; the password is read from standard input.
    Add {
        #[command(flatten)]
        db: DatabaseArgs,
        name: String,
        /// Read the password from stdin (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Import accounts with existing argon2 PHC hashes: one `NAME:PHC` per line (`-` = stdin).
    Import {
        #[command(flatten)]
        db: DatabaseArgs,
        file: PathBuf,
    },
}

async fn open(db: &DatabaseArgs) -> anyhow::Result<Store> {
    let url = db.url()?;
    db.open(&PoolSettings::default())
        .await
        .with_context(|| format!("opening the database {}", store::redact(&url)))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn migrate(db: DatabaseArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = open(&db).await?;
        store.close().await;
        let url = db.url()?;
        if db.skip_migrations {
            println!("the schema of {} is current", store::redact(&url));
        } else {
            println!("migrations applied to {}", store::redact(&url));
        }
        Ok(())
    })
}

pub fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { db, name, .. } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            let hash = Passwords::new(1)?.hash_blocking(&password)?;
            runtime()?.block_on(async {
                let store = open(&db).await?;
                let user = store.create_user(&name, &hash).await?;
                store.close().await;
                println!("created user `{}` with id {}", user.username, user.id);
                Ok(())
            })
        }
        UserCommand::Import { db, file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let mut entries = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((name, phc)) = line.split_once(':') else {
                    bail!("line {}: expected NAME:PHC", n + 1);
                };
                Passwords::check_phc(phc)
                    .with_context(|| format!("line {}: user `{name}`", n + 1))?;
                entries.push((name.to_string(), phc.to_string()));
            }
            runtime()?.block_on(async {
                let store = open(&db).await?;
                let mut created = 0;
                for (name, phc) in &entries {
                    match store.create_user(name, phc).await {
                        Ok(_) => created += 1,
                        Err(store::StoreError::Conflict(_)) => {
                            eprintln!("skipped `{name}`: exists")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                store.close().await;
                println!("imported {created} of {} user(s)", entries.len());
                Ok(())
            })
        }
    }
}
