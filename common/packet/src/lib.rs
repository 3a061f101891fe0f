//! IP packet parsing. No IO.
