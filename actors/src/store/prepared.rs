//! Statements prepared once per pooled connection and kept (deadpool's statement cache).
//!
//! `client.query(sql, ..)` with a string prepares a statement, runs it and closes it: two round
//! trips, and PostgreSQL parses and plans the text every time. On the payment path that was a
//! third of the database's CPU. The `*_cached` methods prepare each distinct text once per
//! connection. Only constant SQL belongs here: the cache is keyed by the text and never evicts,
//! so SQL with values formatted into it would grow it without bound.

use deadpool_postgres::GenericClient;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub trait Prepared: GenericClient {
    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.execute(&statement, params).await
        }
    }

    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query(&statement, params).await
        }
    }

    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_one(&statement, params).await
        }
    }

    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a {
        async move {
            let statement = self.prepare_cached(sql).await?;
            self.query_opt(&statement, params).await
        }
    }
}

impl<C: GenericClient> Prepared for C {}
