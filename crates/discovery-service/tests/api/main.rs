//! discovery-service over HTTP, as Eureka clients and peers use it.

mod client;
mod helpers;
mod leases;
mod replication;
mod rest;
