//! The front end: pest grammar (`grammar/model.pest`) → [`ast`]. Parsing never panics and
//! returns every error it can find.

pub mod ast;
