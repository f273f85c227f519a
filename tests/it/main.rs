mod models;
mod placeholder {}
mod swap;
