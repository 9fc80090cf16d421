//! Group roles and deletion over real sockets, on every backend: under
//! `group_admin = "roles"` the owner and admins manage and the owner alone
//! deletes, promotes and hands over; under the default `members` anyone
//! manages but only the owner changes roles; a deleted group is gone for
//! everyone, and a group created again under its id shows nothing of the
//! old log.

mod common;

use bytes::Bytes;
use common::{Client, Gw};
use imgate::config::GroupAdmin;
use imgate_codec::{
    ErrorCode, Frame,
    frame::{GroupA, GroupOp, GroupR, MsgR, SyncR},
};

/// Sends a group:R and returns its answer (group:A or an error), skipping
/// pushes.
fn op(c: &mut Client, op: GroupOp, group: u64, ids: &[u64]) -> Frame {
    c.send(
        GroupR {
            req: 9,
            op: op as u8,
            group,
            members: Bytes::new(),
        }
        .with_members(ids),
    );
    answer(c)
}

fn answer(c: &mut Client) -> Frame {
    loop {
        match c.frame() {
            Frame::MsgN(_) | Frame::AckN(_) | Frame::ReadN(_) => {}
            other => return other,
        }
    }
}

#[track_caller]
fn ok(f: Frame) -> GroupA {
    match f {
        Frame::GroupA(a) => a,
        other => panic!("expected group:A, got {other:?}"),
    }
}

#[track_caller]
fn refused(f: Frame, code: ErrorCode) {
    match f {
        Frame::Error(e) => assert_eq!(e.code(), code, "{}", e.text()),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn ids(a: &GroupA) -> Vec<u64> {
    a.members().collect()
}

fn post(c: &mut Client, msg_id: u64, group: u64) -> Frame {
    c.send(MsgR {
        no_push: false,
        msg_id,
        group,
        to: 0,
        retry: false,
        body: Bytes::from_static(b"hi"),
    });
    answer(c)
}

fn page(c: &mut Client, group: u64) -> Frame {
    c.send(SyncR {
        group,
        after: 0,
        limit: 50,
    });
    answer(c)
}

#[test]
fn under_roles_the_owner_and_admins_manage_and_the_owner_deletes() {
    for gw in Gw::on_every_backend(|c| c.group_admin = GroupAdmin::Roles) {
        let addr = gw.addr();
        let [mut u1, mut u2, mut u3, mut u4, mut u5] =
            [1, 2, 3, 4, 5].map(|u| Client::login(addr, u, 1));
        let g = ok(op(&mut u1, GroupOp::Create, 0, &[2, 3, 4])).group;
        assert_eq!(ids(&ok(op(&mut u3, GroupOp::Roles, g, &[]))), vec![1]);

        refused(op(&mut u3, GroupOp::Add, g, &[5]), ErrorCode::Forbidden);
        refused(op(&mut u3, GroupOp::Promote, g, &[3]), ErrorCode::Forbidden);
        assert_eq!(ids(&ok(op(&mut u1, GroupOp::Promote, g, &[2, 9]))), vec![2]);
        let added = ok(op(&mut u2, GroupOp::Add, g, &[5]));
        assert_eq!((ids(&added), added.total), (vec![5], 5));
        refused(op(&mut u2, GroupOp::Remove, g, &[1]), ErrorCode::Forbidden);
        assert_eq!(ids(&ok(op(&mut u2, GroupOp::Remove, g, &[3]))), vec![3]);
        refused(op(&mut u4, GroupOp::Remove, g, &[5]), ErrorCode::Forbidden);
        assert_eq!(ids(&ok(op(&mut u4, GroupOp::Remove, g, &[4]))), vec![4]);
        refused(op(&mut u1, GroupOp::Remove, g, &[1]), ErrorCode::Forbidden);
        refused(op(&mut u2, GroupOp::Delete, g, &[]), ErrorCode::Forbidden);
        refused(
            op(&mut u1, GroupOp::Transfer, g, &[9]),
            ErrorCode::InvalidRequest,
        );

        // The owner hands over to 5 and stays as an admin.
        assert_eq!(
            ids(&ok(op(&mut u1, GroupOp::Transfer, g, &[5]))),
            vec![1, 5]
        );
        let roles = ok(op(&mut u2, GroupOp::Roles, g, &[]));
        assert_eq!((ids(&roles), roles.total), (vec![5, 1, 2], 3));
        assert_eq!(ids(&ok(op(&mut u2, GroupOp::Roles, g, &[1]))), vec![5, 2]);
        assert_eq!(ids(&ok(op(&mut u5, GroupOp::Demote, g, &[1]))), vec![1]);
        assert_eq!(ids(&ok(op(&mut u1, GroupOp::Remove, g, &[1]))), vec![1]);

        assert!(matches!(post(&mut u2, 1, g), Frame::MsgA(_)));
        let deleted = ok(op(&mut u5, GroupOp::Delete, g, &[]));
        assert_eq!((deleted.total, ids(&deleted)), (0, vec![]));
        refused(op(&mut u2, GroupOp::List, g, &[]), ErrorCode::NotFound);
        refused(post(&mut u5, 2, g), ErrorCode::NotFound);
        refused(page(&mut u2, g), ErrorCode::NotFound);

        // The id again: a new group that shows nothing of the old log.
        let again = ok(op(&mut u3, GroupOp::Create, g, &[2]));
        assert_eq!((again.group, ids(&again)), (g, vec![2, 3]));
        assert_eq!(ids(&ok(op(&mut u3, GroupOp::Roles, g, &[]))), vec![3]);
        match page(&mut u2, g) {
            Frame::SyncPage(p) => assert_eq!(p.entries().count(), 0, "the old log stays hidden"),
            other => panic!("expected a page, got {other:?}"),
        }
    }
}

#[test]
fn under_members_anyone_manages_and_only_the_owner_changes_roles() {
    for gw in Gw::on_every_backend(|_| {}) {
        let addr = gw.addr();
        let [mut u1, mut u2, mut u3] = [1, 2, 3].map(|u| Client::login(addr, u, 1));
        let g = ok(op(&mut u1, GroupOp::Create, 0, &[2, 3])).group;
        refused(op(&mut u2, GroupOp::Promote, g, &[3]), ErrorCode::Forbidden);
        assert_eq!(ids(&ok(op(&mut u1, GroupOp::Promote, g, &[3]))), vec![3]);
        assert_eq!(ids(&ok(op(&mut u2, GroupOp::Remove, g, &[1]))), vec![1]);
        assert_eq!(ids(&ok(op(&mut u3, GroupOp::Roles, g, &[]))), vec![0, 3]);
        assert_eq!(ok(op(&mut u2, GroupOp::Delete, g, &[])).total, 0);
        refused(op(&mut u3, GroupOp::List, g, &[]), ErrorCode::NotFound);
        refused(
            op(&mut u3, GroupOp::Delete, g, &[2]),
            ErrorCode::InvalidRequest,
        );
    }
}
