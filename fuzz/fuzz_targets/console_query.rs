//! The console's query strings and form bodies: the search form (and its
//! checks before any query), the paging, sign-in, triage, token and CSRF
//! forms, the path parameters and the `next` target after sign-in.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    doorwatch_console::web::fuzzing::parse_forms(data);
});
