//! Links, addresses and routes over rtnetlink (no `ip` subprocesses).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{Error, Result};

/// A netlink connection; its socket lives in the namespace of the thread that
/// created it. The connection task ends when every handle is dropped.
pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl(step: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink {
        step,
        name: name.to_owned(),
        source,
    }
}

/// errno of a netlink error answer, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Creates a veth pair: `host` in the handle's namespace (down, in `group`)
/// and `peer` (down) directly inside the namespace `peer_ns`. Returns the
/// host end's index.
pub async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    peer_ns: &OwnedFd,
    group: u32,
) -> Result<u32> {
    // One queue each way, said explicitly: without the attributes the
    // kernel makes a queue per CPU and then trims them to one, which waits
    // for an (expedited) RCU grace period while holding the RTNL lock —
    // every other network change on the host waited behind it (measured:
    // veth creation 91 ms mean in a burst of 50 creates).
    let queues = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
    let mut msg = LinkVeth::new(host, peer).build();
    msg.attributes.push(LinkAttribute::Group(group));
    msg.attributes.extend(queues.clone());
    for attr in msg.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = attr {
            for info in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = info {
                    p.attributes
                        .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
                    p.attributes.extend(queues.clone());
                }
            }
        }
    }
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl("create veth", host))?;
    index(h, host).await?.ok_or_else(|| Error::Netlink {
        step: "find new veth",
        name: host.to_owned(),
        source: rtnetlink::Error::RequestFailed,
    })
}

/// Index of the link called `name`, `None` if there is none.
pub async fn index(h: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(get(h, name).await?.map(|m| m.header.index))
}

/// The link message of `name`, `None` if there is none.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut req = h.link().get().match_name(name.to_owned()).execute();
    match req.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl("get link", name)(e)),
    }
}

/// Every link of the handle's namespace: (name, index, group).
pub async fn list(h: &Handle) -> Result<Vec<(String, u32, u32)>> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links", "*"))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            let name = m.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })?;
            Some((name, m.header.index, group_of(&m)))
        })
        .collect())
}

pub fn group_of(m: &LinkMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Group(g) => Some(*g),
            _ => None,
        })
        .unwrap_or(0)
}

pub fn txqueuelen_of(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::TxQueueLen(q) => Some(*q),
        _ => None,
    })
}

/// Adds `addr/prefix_len`. No broadcast address: on a /31 (RFC 3021) the
/// "broadcast" would be the peer's address and make it unreachable.
pub async fn add_addr(
    h: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<()> {
    let mut req = h.address().add(index, IpAddr::V4(addr), prefix_len);
    req.message_mut()
        .attributes
        .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
    req.execute().await.map_err(nl("add address", name))
}

pub async fn set_up(h: &Handle, index: u32, name: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("set link up", name))
}

/// Sets the transmit queue length of a link.
pub async fn set_txqueuelen(h: &Handle, index: u32, name: &str, len: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::TxQueueLen(len))
        .build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(nl("set txqueuelen", name))
}

pub async fn add_default_route(h: &Handle, via: Ipv4Addr) -> Result<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(via).build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(nl("add default route", &via.to_string()))
}

/// Deletes the link `name`; a veth takes its peer with it. Missing is fine.
pub async fn delete(h: &Handle, name: &str) -> Result<()> {
    let Some(idx) = index(h, name).await? else {
        return Ok(());
    };
    let h = h.clone();
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl("delete link", name)(e)),
    }
}
