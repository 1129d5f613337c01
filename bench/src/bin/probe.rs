use sea_orm::{ConnectionTrait, DbBackend, Statement};
use std::time::Instant;
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap();
    let db = sea_orm::Database::connect(url.as_str()).await?;
    let backend = db.get_database_backend();
    let owner: uuid::Uuid = {
        let r = db
            .query_one_raw(Statement::from_string(
                backend,
                "select owner_id from prompts limit 1",
            ))
            .await?
            .unwrap();
        r.try_get_by_index(0)?
    };
    let oh = owner.simple().to_string();
    let qs: Vec<String> = if backend == DbBackend::Sqlite {
        vec![
            "doc : (\"zyxquark\")".into(),
            format!("scope : (\"zzo{oh}\") AND doc : (\"zyxquark\")"),
            format!("scope : (\"zzo{oh}\") AND scope : (\"zzsactive\") AND doc : (\"zyxquark\")"),
            format!("scope : (\"zzo{oh}\") AND scope : (\"zzsactive\") AND doc : (\"prompt\")"),
            "doc : (\"prompt\")".into(),
        ]
    } else {
        vec![
            "'zyxquark':D".into(),
            format!("('zzo{oh}':A) & 'zyxquark':D"),
            format!("('zzo{oh}':A) & ('zzsactive':A) & 'prompt':D"),
            "'prompt':D".into(),
        ]
    };
    for q in qs {
        let sql = if backend == DbBackend::Sqlite {
            "SELECT rowid FROM prompt_fts WHERE prompt_fts MATCH ? ORDER BY rowid DESC LIMIT 1000"
        } else {
            "SELECT seq FROM prompt_search WHERE tsv @@ to_tsquery('simple', $1) ORDER BY seq DESC LIMIT 1000"
        };
        for _ in 0..2 {
            let s = Instant::now();
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [q.clone().into()],
                ))
                .await?;
            println!(
                "{:>8.2} ms {:>5} rows  {}",
                s.elapsed().as_secs_f64() * 1000.0,
                rows.len(),
                &q[..q.len().min(70)]
            );
        }
    }
    Ok(())
}
