//! Which waiting QR codes a new start replaces: a few may wait for a phone
//! at once per user and flow (a flood of starts for one ID rewrites rows
//! instead of adding them), and a flood from elsewhere must not take the QR
//! code on the user's own screen.

use super::ticket::Ticket;

/// QR codes of one user and flow that may wait for a phone at once from
/// one network (IPv4 /24, IPv6 /48): a new start replaces the oldest of them.
pub const WAITING_KEPT: usize = 3;

/// QR codes of one user and flow that may wait at once from all networks: a
/// new start then replaces the oldest of the network that holds the most, so
/// that a flood of starts for someone else's ID from elsewhere does not take
/// away the QR code on their own screen.
pub const WAITING_TOTAL: usize = 8;

/// The waiting tickets (oldest first) to drop before one from `network`
/// joins them: its own network's oldest beyond [`WAITING_KEPT`], then, past
/// [`WAITING_TOTAL`], the oldest of whichever network holds the most.
pub(super) fn make_room(waiting: &[Ticket], network: &str) -> Vec<i64> {
    let net = |t: &Ticket| t.pc.as_ref().map_or("", |p| p.network.as_str()).to_owned();
    let mut kept: Vec<(i64, String)> = waiting.iter().map(|t| (t.id, net(t))).collect();
    let mut drop = Vec::new();
    let mut take = |kept: &mut Vec<(i64, String)>, from: &str| {
        if let Some(i) = kept.iter().position(|(_, n)| n == from) {
            drop.push(kept.remove(i).0);
        }
    };
    while kept.iter().filter(|(_, n)| n == network).count() >= WAITING_KEPT {
        take(&mut kept, network);
    }
    while kept.len() >= WAITING_TOTAL {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (_, n) in &kept {
            *counts.entry(n.as_str()).or_default() += 1;
        }
        // The network holding the most; of equals, the one that came last
        // (a user's own QR code, started before a flood, is given up last).
        let most = counts.values().copied().max().unwrap_or(0);
        let Some(busiest) =
            kept.iter().rev().find(|(_, n)| counts.get(n.as_str()) == Some(&most)).map(|(_, n)| n.clone())
        else {
            break;
        };
        take(&mut kept, &busiest);
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fido::ticket::{Kind, PcInfo};

    #[test]
    fn a_start_replaces_its_own_networks_qr_codes_first_then_the_busiest_networks() {
        let ticket = |id: i64, network: &str| {
            let pc = PcInfo::new("192.0.2.1", network, "Mozilla/5.0", None, 0).expect("pc");
            Ticket { id, ..Ticket::new(Kind::Change, "100001", true, true, 0, 60_000, Some(pc)) }
        };
        // The user's own QR code (network "home"), then a flood from "x".
        let mut waiting = vec![ticket(1, "home"), ticket(2, "x"), ticket(3, "x")];
        assert_eq!(make_room(&waiting, "x"), vec![] as Vec<i64>, "three from x may wait");
        waiting.push(ticket(4, "x"));
        assert_eq!(make_room(&waiting, "x"), vec![2], "x replaces its own oldest, not home's");
        // Past the total, from many networks: the busiest network gives way.
        let waiting: Vec<Ticket> = [(1, "home"), (2, "a"), (3, "a"), (4, "b"), (5, "c"), (6, "a"), (7, "d"), (8, "e")]
            .iter()
            .map(|(id, n)| ticket(*id, n))
            .collect();
        assert_eq!(make_room(&waiting, "f"), vec![2]);
        assert_eq!(make_room(&waiting, "home"), vec![2]);
        assert_eq!(make_room(&waiting, "a"), vec![2]);
        // Eight networks with one each: the one that came last gives way.
        let waiting: Vec<Ticket> =
            ["home", "a", "b", "c", "d", "e", "f", "g"].iter().zip(1..).map(|(n, id)| ticket(id, n)).collect();
        assert_eq!(make_room(&waiting, "h"), vec![8]);
    }
}
