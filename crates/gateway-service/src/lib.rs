//! gateway-service (:8080): the single public entry. Routes requests to the services found
//! through discovery (or to fixed URLs), checks access tokens at the edge, limits request
//! rates, balances load over instances, retries what is safe to retry, and streams bodies
//! both ways.

pub mod balancer;
pub mod breaker;
pub mod budget;
pub mod ratelimit;
pub mod routes;
pub mod settings;

pub use settings::Settings;

pub const NAME: &str = "gateway-service";
