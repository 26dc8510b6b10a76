#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| m2wsgi_fuzz::tnetstring(data));
