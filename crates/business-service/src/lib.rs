//! business-service (:8082): prompts, versions, folders, tags, categories, search,
//! rendering and import/export.

pub mod domain;
