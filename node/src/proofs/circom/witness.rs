//! circom's WASM witness generators, run in wasmi (an interpreter: no native code, nothing to
//! compile at run time).
//!
//! A circom 2 generator exports a small API over a shared buffer of 32-bit words: write a
//! field element's words (least significant first) with `writeSharedRWMemory`, then
//! `setInputSignal(hash_hi, hash_lo, position)` with the FNV-1a hash of the signal's name;
//! after the last input it computes every signal, checking the circuit's assertions, and
//! `getWitness(i)` puts wire `i`'s value in the buffer. It imports a few `runtime` functions;
//! `exceptionHandler(code)` reports a failed assertion or a bad input, which ends the
//! calculation with an error here.

use ark_bn254::Fr;
use ark_ff::{BigInt, BigInteger, PrimeField};
use wasmi::{Engine, ExternType, Instance, Linker, Module, Store, TypedFunc, Val};

use super::CircomError;

/// A compiled witness generator; each calculation runs in a fresh instance.
pub struct WitnessCalculator {
    engine: Engine,
    module: Module,
}

impl WitnessCalculator {
    pub fn new(wasm: &[u8]) -> Result<WitnessCalculator, CircomError> {
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| CircomError::Wasm(e.to_string()))?;
        Ok(WitnessCalculator { engine, module })
    }

    /// Every wire's value for these inputs (name, then the values of the signal, arrays
    /// flattened row by row).
    pub fn calculate(&self, inputs: &[(String, Vec<Fr>)]) -> Result<Vec<Fr>, CircomError> {
        let wasm = |e: wasmi::Error| CircomError::Wasm(e.to_string());
        let mut store = Store::new(&self.engine, ());
        let mut linker = Linker::<()>::new(&self.engine);
        for import in self.module.imports() {
            let ExternType::Func(ty) = import.ty() else {
                return Err(CircomError::Wasm(format!(
                    "unsupported import {}.{}",
                    import.module(),
                    import.name()
                )));
            };
            let name = import.name().to_owned();
            let returns = ty.results().to_vec();
            linker
                .func_new(import.module(), import.name(), ty.clone(), move |_, params, results| {
                    if name == "exceptionHandler" {
                        let code = params.first().and_then(Val::i32).unwrap_or(0);
                        return Err(wasmi::Error::new(exception(code)));
                    }
                    // Messages and logging, which this calculator does not show.
                    for (result, ty) in results.iter_mut().zip(&returns) {
                        *result = Val::default_for_ty(*ty);
                    }
                    Ok(())
                })
                .map_err(|e| CircomError::Wasm(e.to_string()))?;
        }
        let instance = linker.instantiate_and_start(&mut store, &self.module).map_err(wasm)?;
        let api = Api::new(&instance, &store)?;

        let words = api.field_words.call(&mut store, ()).map_err(wasm)?;
        if words != 8 {
            return Err(CircomError::Wasm(format!("a field of {words} words, not BN254's 8")));
        }
        api.raw_prime.call(&mut store, ()).map_err(wasm)?;
        if api.read(&mut store)? != Fr::MODULUS {
            return Err(CircomError::Wasm("the witness generator is not over BN254".into()));
        }
        api.init.call(&mut store, 1).map_err(wasm)?;
        let mut hashes = Vec::with_capacity(inputs.len());
        for (name, values) in inputs {
            let hash = fnv1a(name);
            let (hi, lo) = ((hash >> 32) as u32 as i32, hash as u32 as i32);
            let size = api.signal_size.call(&mut store, (hi, lo)).map_err(wasm)?;
            // An unknown name has size 0 (or -1 in older generators).
            if size <= 0 {
                return Err(CircomError::Input(format!("the circuit has no input signal {name:?}")));
            }
            if values.len() != size as usize {
                return Err(CircomError::Input(format!(
                    "input {name:?} takes {size} values, {} given",
                    values.len()
                )));
            }
            hashes.push((hi, lo));
        }
        // The circuit runs when its last input is set; with one missing it never would.
        let expected = api.input_size.call(&mut store, ()).map_err(wasm)?;
        let given: usize = inputs.iter().map(|(_, values)| values.len()).sum();
        if given != expected as usize {
            return Err(CircomError::Input(format!(
                "the circuit takes {expected} input values, {given} given"
            )));
        }
        for ((_, values), (hi, lo)) in inputs.iter().zip(hashes) {
            for (position, value) in values.iter().enumerate() {
                api.write(&mut store, value)?;
                api.set_signal.call(&mut store, (hi, lo, position as i32)).map_err(wasm)?;
            }
        }
        let wires = api.witness_size.call(&mut store, ()).map_err(wasm)?;
        (0..wires)
            .map(|i| {
                api.witness.call(&mut store, i).map_err(wasm)?;
                let value = api.read(&mut store)?;
                Fr::from_bigint(value)
                    .ok_or_else(|| CircomError::Wasm(format!("wire {i} is not a field element")))
            })
            .collect()
    }
}

/// The generator's exports this calculator uses.
struct Api {
    field_words: TypedFunc<(), i32>,
    raw_prime: TypedFunc<(), ()>,
    read_word: TypedFunc<i32, i32>,
    write_word: TypedFunc<(i32, i32), ()>,
    init: TypedFunc<i32, ()>,
    signal_size: TypedFunc<(i32, i32), i32>,
    input_size: TypedFunc<(), i32>,
    set_signal: TypedFunc<(i32, i32, i32), ()>,
    witness_size: TypedFunc<(), i32>,
    witness: TypedFunc<i32, ()>,
}

impl Api {
    fn new(instance: &Instance, store: &Store<()>) -> Result<Api, CircomError> {
        fn get<P: wasmi::WasmParams, R: wasmi::WasmResults>(
            instance: &Instance,
            store: &Store<()>,
            name: &str,
        ) -> Result<TypedFunc<P, R>, CircomError> {
            instance.get_typed_func(store, name).map_err(|e| {
                CircomError::Wasm(format!("export {name}: {e} (not a circom 2 witness generator?)"))
            })
        }
        Ok(Api {
            field_words: get(instance, store, "getFieldNumLen32")?,
            raw_prime: get(instance, store, "getRawPrime")?,
            read_word: get(instance, store, "readSharedRWMemory")?,
            write_word: get(instance, store, "writeSharedRWMemory")?,
            init: get(instance, store, "init")?,
            signal_size: get(instance, store, "getInputSignalSize")?,
            input_size: get(instance, store, "getInputSize")?,
            set_signal: get(instance, store, "setInputSignal")?,
            witness_size: get(instance, store, "getWitnessSize")?,
            witness: get(instance, store, "getWitness")?,
        })
    }

    /// The shared buffer as a 256-bit integer.
    fn read(&self, store: &mut Store<()>) -> Result<BigInt<4>, CircomError> {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let word = |j: usize, store: &mut Store<()>| {
                self.read_word.call(&mut *store, j as i32).map(|w| w as u32 as u64)
            };
            let lo = word(2 * i, store).map_err(|e| CircomError::Wasm(e.to_string()))?;
            let hi = word(2 * i + 1, store).map_err(|e| CircomError::Wasm(e.to_string()))?;
            *limb = lo | hi << 32;
        }
        Ok(BigInt::new(limbs))
    }

    fn write(&self, store: &mut Store<()>, value: &Fr) -> Result<(), CircomError> {
        let bytes = value.into_bigint().to_bytes_le();
        for (j, word) in bytes.chunks(4).enumerate() {
            let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
            self.write_word
                .call(&mut *store, (j as i32, word as i32))
                .map_err(|e| CircomError::Wasm(e.to_string()))?;
        }
        Ok(())
    }
}

/// 64-bit FNV-1a of a signal's name: how circom's generators find input signals.
fn fnv1a(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3))
}

fn exception(code: i32) -> String {
    let what = match code {
        1 => "signal not found",
        2 => "too many signals set",
        3 => "signal already set",
        4 => "assertion failed: the inputs do not satisfy the circuit",
        5 => "out of memory",
        6 => "input signal array access out of bounds",
        7 => "array access out of bounds",
        _ => "unknown error",
    };
    format!("witness generator error {code}: {what}")
}
