//! Gas of every transaction the marketplace takes, over one walk through its life: the
//! table in `contracts/README.md`, kept current by a snapshot (a change in gas is a reviewed
//! diff) and a check that the README carries the same table.

mod harness;

use alloy_primitives::B256;
use harness::*;
use neverust::chain::contracts::Marketplace as M;
use neverust::chain::contracts::overloads::*;

fn miss(h: &mut Harness, id: B256, slot: u64) {
    h.next_period();
    let period = h.period();
    h.next_period();
    h.send(account(20), M::markProofAsMissingCall { slotId: slot_id(id, slot), period }).unwrap();
}

#[test]
fn gas_table() {
    let mut h = Harness::new(config());
    let hosts: Vec<_> = (10..14).map(account).collect();
    // A request filled, proven, slashed, repaired, topped up, paid out and withdrawn.
    let request = h.request(account(1), ask());
    let id = h.submit(&request).unwrap();
    for slot in 0..3 {
        h.fill(hosts[slot as usize], &request, slot).unwrap();
    }
    h.next_period();
    h.submit_proof(hosts[0], &request, 0).unwrap();
    miss(&mut h, id, 1);
    miss(&mut h, id, 1); // the second miss frees the slot
    h.fill(hosts[3], &request, 1).unwrap(); // a repair
    miss(&mut h, id, 2);
    let collateral = collateral_per_slot(&request.ask);
    h.mint(hosts[2], collateral);
    h.approve(hosts[2], collateral);
    h.send(hosts[2], M::topUpCollateralCall { slotId: slot_id(id, 2) }).unwrap();
    let end = h.view(DEPLOYER, M::requestEndCall { requestId: id }).unwrap();
    h.chain.mine(end + 1);
    h.send(hosts[0], FreeSlotCall { slotId: slot_id(id, 0) }).unwrap();
    h.send(
        hosts[3],
        FreeSlotToCall { slotId: slot_id(id, 1), rewardRecipient: hosts[0], collateralRecipient: hosts[1] },
    )
    .unwrap();
    h.send(hosts[2], FreeSlotCall { slotId: slot_id(id, 2) }).unwrap();
    h.send(account(1), WithdrawFundsCall { requestId: id }).unwrap();
    // A request a host leaves early, then cancelled.
    let request = h.request(account(2), ask());
    let id = h.submit(&request).unwrap();
    h.fill(hosts[0], &request, 0).unwrap();
    h.send(hosts[0], FreeSlotCall { slotId: slot_id(id, 0) }).unwrap();
    let expiry = h.view(DEPLOYER, M::requestExpiryCall { requestId: id }).unwrap();
    h.chain.mine(expiry + 1);
    h.send(account(2), WithdrawFundsToCall { requestId: id, withdrawRecipient: account(3) }).unwrap();

    let mut table =
        String::from("| function | gas (least) | gas (most) | calls in the walk |\n|---|---:|---:|---:|\n");
    for (signature, used) in &h.gas {
        let function = match *signature {
            "freeSlot(bytes32)" => "`freeSlot(slotId)`".to_string(),
            "freeSlot(bytes32,address,address)" => {
                "`freeSlot(slotId, rewardRecipient, collateralRecipient)`".to_string()
            }
            "withdrawFunds(bytes32)" => "`withdrawFunds(requestId)`".to_string(),
            "withdrawFunds(bytes32,address)" => "`withdrawFunds(requestId, withdrawRecipient)`".to_string(),
            _ => format!("`{}`", signature.split('(').next().unwrap()),
        };
        let (least, most) = (used.iter().min().unwrap(), used.iter().max().unwrap());
        table.push_str(&format!("| {function} | {least} | {most} | {} |\n", used.len()));
    }
    insta::assert_snapshot!(table);
    let readme = include_str!("../README.md");
    assert!(readme.contains(&table), "contracts/README.md does not carry the current gas table:\n{table}");
}
