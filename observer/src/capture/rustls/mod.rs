//! rustls in executables without symbols, built with link-time optimisation (the Codex CLI:
//! a static musl executable): where its plaintext passes, found by what survives the build.
//!
//! `buffer_plaintext`/`take_received_plaintext`, probed by name when symbols are there, are
//! inlined in such builds. What stays is the record layer's calls through its boxed ciphers
//! (`self.message_encrypter.encrypt(…)`, `….decrypt(…)`): the calls are indirect, so the
//! cipher implementations remain functions, and the code around the calls keeps a recognisable
//! shape. Function bounds come from the unwind table (`.eh_frame_hdr`). Located:
//!
//! - **Send**: `CommonState::send_appdata_encrypt(&mut self, OutboundChunks, …) -> usize`, the
//!   one function that names `record_layer.rs` in a panic location, encrypts through a boxed
//!   cipher held in the struct passed as its first argument, builds the message it encrypts as
//!   `ContentType::ApplicationData`, and reads its second argument by reference. Every byte of application data passes it
//!   once; it takes the connection (`CommonState`) and the bytes like `buffer_plaintext`, so
//!   the same probes serve it.
//! - **Receive**: the record layer's decryption (`RecordLayer::decrypt_incoming`, a function
//!   or inlined) is recognised by its call through the boxed decrypter with the read sequence
//!   number from the same struct, next to a compare with `SEQ_SOFT_LIMIT`. The decrypters
//!   themselves (ring's and aws-lc-rs's, TLS 1.2 and 1.3) are found through their vtables,
//!   loaded by the provider functions that build them (named by panic locations in
//!   `rustls/src/crypto/…`), and probed at entry and return: the plaintext is in the result.
//!   A decrypter's `self` names its connection once the send probe has seen it in that
//!   connection's record layer (user space never sees an unknown one: counted, not copied).
//!
//! Cross-checks that must agree before anything is attached: the tag of `Ok` in
//! `Result<_, rustls::Error>` is the same at the send's `encrypt(…).unwrap()` and at the
//! receive's result compares; the decrypter field sits next to the encrypter field (one
//! record layer, found from two sides); each decrypter writes both that `Ok` tag and the
//! `DecryptError` tag the receive compares with. Anything else is refused with the reason: a
//! uprobe at a wrong address would corrupt the process. x86-64 only; rustls 0.23 only (the
//! layouts the probes read, `observer_common::rustls_layout`, are 0.23's).
mod code;
mod data;
pub mod example;

use std::collections::{BTreeMap, BTreeSet};

use object::Object;
use observer_common::rustls_layout::{APPLICATION_DATA, OUTBOUND_TYP};

use self::{
    code::{BoxCall, Code, Function},
    data::Pointers,
};
use super::{
    eh_frame::FunctionBounds,
    elf::file_offset,
    untrusted::{Deadline, Elf},
};

/// The record layer's source file: its panic locations (`assert!`, `unwrap()` in
/// `encrypt_outgoing`) are referenced from every function it is inlined into.
const RECORD_LAYER: &str = "record_layer.rs";
/// The crypto providers' cipher constructors (each unwraps a key: a panic location).
const PROVIDERS: &[&str] = &[
    "crypto/ring/tls13.rs",
    "crypto/ring/tls12.rs",
    "crypto/aws_lc_rs/tls13.rs",
    "crypto/aws_lc_rs/tls12.rs",
];
/// `SEQ_SOFT_LIMIT`: `decrypt_incoming` compares the read sequence number with it.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;
/// Functions decoded at most per kind, and vtables looked at (real builds: a handful each, 15
/// vtables in Codex; a hostile file may name the paths from everywhere).
const MAX_FUNCTIONS: usize = 64;
const MAX_VTABLES: usize = 256;

/// The result for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No rustls source path in the file (or not x86-64).
    Absent,
    Located(Located),
    /// rustls is there but could not be read with certainty.
    Refused(String),
}

/// Where to probe, as file offsets, and what the probes need to know about the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub send: u64,
    pub decrypters: Vec<u64>,
    /// Offset of the record layer's decrypter (its data pointer) in `CommonState`.
    pub decrypter_field: u64,
    /// First byte of `Ok(…)` in `Result<_, rustls::Error>`.
    pub ok_tag: u8,
    /// What was found and how it was checked, for the log.
    pub evidence: String,
}

/// Looks for rustls 0.23 in `elf`, an executable without rustls symbols.
pub fn locate(elf: &Elf, deadline: &Deadline) -> Verdict {
    if elf.architecture() != object::Architecture::X86_64 {
        return Verdict::Absent;
    }
    let versions = data::rustls_versions(elf);
    let readable: Vec<_> = versions.iter().filter(|v| v.1 == 23).collect();
    if versions.is_empty() {
        return Verdict::Absent;
    }
    let shown = |vs: &[(u32, u32, u32)]| {
        vs.iter()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if readable.is_empty() {
        return Verdict::Refused(format!(
            "rustls {}: only 0.23's layouts are known",
            shown(&versions)
        ));
    }
    let Some(bounds) = FunctionBounds::of(elf) else {
        return Verdict::Refused("no .eh_frame_hdr to bound its functions".into());
    };
    let Some(code) = Code::of(elf) else {
        return Verdict::Refused("no .text section".into());
    };
    let pointers = Pointers::of(elf, deadline);
    let mut paths = Vec::new();
    let mut providers = Vec::new();
    for (_, minor, patch) in &readable {
        let source = format!("rustls-0.{minor}.{patch}/src/");
        for (file, provider) in
            std::iter::once((RECORD_LAYER, false)).chain(PROVIDERS.iter().map(|p| (*p, true)))
        {
            for found in data::strings(elf, format!("{source}{file}").as_bytes()) {
                paths.push(found);
                providers.push(provider);
            }
        }
    }
    let locations: BTreeMap<u64, bool> = data::locations(&pointers, &paths, deadline)
        .into_iter()
        .map(|(address, path)| (address, providers[path]))
        .collect();
    let targets: Vec<u64> = locations.keys().copied().collect();
    let mut record_layer = BTreeSet::new();
    let mut constructors = BTreeSet::new();
    for (site, target) in code.references(&targets, deadline) {
        let Some(function) = bounds.containing(site) else {
            continue;
        };
        let set = if locations[&target] {
            &mut constructors
        } else {
            &mut record_layer
        };
        set.insert((function.start, function.end));
    }
    let decryption: BTreeSet<(u64, u64)> = code
        .compares_with(SEQ_SOFT_LIMIT, deadline)
        .into_iter()
        .filter_map(|site| bounds.containing(site).map(|f| (f.start, f.end)))
        .collect();
    let decode = |set: BTreeSet<(u64, u64)>| -> Vec<Function> {
        set.into_iter()
            .take(MAX_FUNCTIONS)
            .take_while(|_| deadline.left())
            .filter_map(|(start, end)| code.function(start..end))
            .collect()
    };
    let functions = Functions {
        record_layer: decode(record_layer),
        decryption: decode(decryption),
        constructors: decode(constructors),
    };
    match identify(&functions, &code, &bounds, &pointers, deadline) {
        Ok(found) => {
            let offset = |address| file_offset(elf, address);
            let (Some(send), Some(decrypters)) = (
                offset(found.send),
                found.decrypters.iter().map(|&d| offset(d)).collect(),
            ) else {
                return Verdict::Refused("functions outside the file's segments".into());
            };
            Verdict::Located(Located {
                send,
                decrypters,
                decrypter_field: found.decrypter_field,
                ok_tag: found.ok_tag,
                evidence: format!("rustls {}: {}", shown(&versions), found.evidence),
            })
        }
        Err(why) => Verdict::Refused(format!("rustls {}: {why}", shown(&versions))),
    }
}

/// The functions the locator looks into, by why.
struct Functions {
    /// Those naming `record_layer.rs` in a panic location.
    record_layer: Vec<Function>,
    /// Those comparing a value with `SEQ_SOFT_LIMIT`.
    decryption: Vec<Function>,
    /// Those naming a crypto provider's TLS source file in a panic location.
    constructors: Vec<Function>,
}

/// What [`identify`] found, by virtual address.
struct Found {
    send: u64,
    decrypters: Vec<u64>,
    decrypter_field: u64,
    ok_tag: u8,
    evidence: String,
}

/// Tells the send function, the decrypter field and the decrypters apart, and cross-checks
/// them (see the module's documentation).
fn identify(
    functions: &Functions,
    code: &Code,
    bounds: &FunctionBounds,
    pointers: &Pointers,
    deadline: &Deadline,
) -> Result<Found, String> {
    // Send: encrypts an ApplicationData message through a cipher held by its first argument.
    let mut senders: Vec<(&Function, BoxCall, Vec<u8>)> = Vec::new();
    for function in &functions.record_layer {
        for call in function.box_calls() {
            let Some(message) = call.argument else {
                continue;
            };
            if function.holds_first_argument(call.object, call.straight_from)
                && function.reads_through_second_argument()
                && function
                    .stack_bytes_stored(message + OUTBOUND_TYP)
                    .contains(&APPLICATION_DATA)
            {
                senders.push((function, call, function.result_compares(&call)));
            }
        }
    }
    let send_functions: BTreeSet<u64> = senders.iter().map(|(f, ..)| f.range.start).collect();
    let (send, encrypter_field, ok_tag) = match (send_functions.len(), senders.first()) {
        (1, Some((function, call, compares))) => {
            let agreed = senders
                .iter()
                .all(|(_, c, v)| c.field == call.field && v == compares);
            let [ok_tag] = compares[..] else {
                return Err(format!(
                    "the send function checks its encryption's result against {compares:?}, \
                     expected one Ok tag"
                ));
            };
            if !agreed {
                return Err("the send function's encryptions disagree".into());
            }
            (function.range.start, call.field, ok_tag)
        }
        (0, _) => {
            return Err(format!(
                "none of the {} functions naming record_layer.rs encrypts application data \
                 for the CommonState it is given (send_appdata_encrypt inlined?)",
                functions.record_layer.len()
            ));
        }
        (n, _) => {
            return Err(format!(
                "{n} functions look like send_appdata_encrypt: {}",
                hex_list(&send_functions)
            ));
        }
    };

    // Receive: calls through a cipher with the sequence number from the same struct.
    let mut receives: Vec<(u64, BoxCall, Vec<u8>)> = Vec::new();
    for function in &functions.decryption {
        for call in function.box_calls() {
            if call.rcx_from_object && call.result.is_some() {
                receives.push((function.range.start, call, function.result_compares(&call)));
            }
        }
    }
    let Some((_, first, _)) = receives.first() else {
        return Err(
            "no record-layer decryption found (a call through a boxed cipher with the \
             sequence number beside it, near a compare with SEQ_SOFT_LIMIT)"
                .into(),
        );
    };
    let decrypter_field = first.field;
    if receives.iter().any(|(_, c, _)| c.field != decrypter_field) {
        return Err("the record layer's decryptions use different fields".into());
    }
    let mut other_tags = BTreeSet::new();
    for (at, call, compares) in &receives {
        if !compares.contains(&ok_tag) {
            return Err(format!(
                "the decryption at {:#x} checks its result against {compares:?}, not the send's \
                 Ok tag {ok_tag:#x}",
                call.at.max(*at)
            ));
        }
        other_tags.extend(compares.iter().filter(|&&t| t != ok_tag));
    }
    let decrypt_error = match other_tags.into_iter().collect::<Vec<_>>()[..] {
        [tag] => tag,
        ref tags => {
            return Err(format!(
                "the decryptions check their results for {tags:?} besides Ok, expected \
                 DecryptError alone"
            ));
        }
    };
    if decrypter_field.abs_diff(encrypter_field) != 16 {
        return Err(format!(
            "the decrypter (at {decrypter_field:#x}) is not next to the encrypter (at \
             {encrypter_field:#x}): not one record layer"
        ));
    }
    let decrypter_field = u64::try_from(decrypter_field)
        .ok()
        .filter(|&f| f < 1 << 16)
        .ok_or_else(|| format!("decrypter field at {decrypter_field:#x}"))?;

    // Decrypters: vtables their providers load, whose method writes both tags.
    let vtables: BTreeSet<u64> = functions
        .constructors
        .iter()
        .flat_map(Function::addresses_loaded)
        .filter_map(|address| data::vtable_method(pointers, bounds, address))
        .take(MAX_VTABLES)
        .collect();
    let decrypters: Vec<u64> = vtables
        .iter()
        .copied()
        .take_while(|_| deadline.left())
        .filter(|&method| {
            bounds
                .containing(method)
                .and_then(|f| code.function(f))
                .is_some_and(|f| {
                    let tags = f.byte_constants();
                    tags.contains(&ok_tag) && tags.contains(&decrypt_error)
                })
        })
        .collect();
    if decrypters.is_empty() {
        return Err(format!(
            "none of the {} cipher vtables its crypto providers build holds a decrypter",
            vtables.len()
        ));
    }
    let receive_functions: BTreeSet<u64> = receives.iter().map(|(f, ..)| *f).collect();
    // What a probe at each entry costs: the kernel emulates a push; anything else it
    // single-steps (about ten times the cost in a VM).
    let single_stepped = std::iter::once(send)
        .chain(decrypters.iter().copied())
        .filter(|&entry| {
            !bounds
                .containing(entry)
                .and_then(|f| code.function(f))
                .is_some_and(|f| f.starts_with_push())
        })
        .count();
    let entries = match single_stepped {
        0 => "every probed entry starts with a push (emulated by the kernel)".to_owned(),
        n => format!("{n} probed entries start with an instruction the kernel single-steps"),
    };
    Ok(Found {
        send,
        decrypters: decrypters.clone(),
        decrypter_field,
        ok_tag,
        evidence: format!(
            "CommonState::send_appdata_encrypt at {send:#x} (encrypts ApplicationData with \
             the cipher at CommonState+{encrypter_field:#x}); decryption at {} site(s) in {} \
             (cipher at +{decrypter_field:#x}, next to the encrypter); {} MessageDecrypter \
             implementation(s) ({}) of {} cipher vtables; cross-checked: Ok is {ok_tag:#x} at \
             the send and the decryptions, DecryptError ({decrypt_error:#x}) at the \
             decryptions and in every decrypter; {entries}",
            receives.len(),
            hex_list(&receive_functions),
            decrypters.len(),
            hex_list(&decrypters.iter().copied().collect()),
            vtables.len(),
        ),
    })
}

fn hex_list(addresses: &BTreeSet<u64>) -> String {
    addresses
        .iter()
        .map(|a| format!("{a:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
