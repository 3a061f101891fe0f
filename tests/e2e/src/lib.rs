//! End-to-end test harness for Postern (network namespaces, real binaries, real peers).
