"""The fusion map page's static parts: its style sheet and its script.

The script reads the embedded JSON (block geometry, the ends of edges between
blocks) and redraws those edges when a block opens or closes; its edge routes
follow :func:`pyfuse.htmlmap.layout.route`.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
html,body{margin:0;height:100%;font:13px sans-serif;color:#222}
body{display:flex}
#side{width:340px;flex:none;overflow:auto;padding:10px 14px;border-right:1px solid #ccc;
 background:#fafafa;box-sizing:border-box}
#main{flex:1;overflow:auto}
h1{font-size:16px;margin:4px 0}h2{font-size:14px;margin:14px 0 4px}
ul.legend{list-style:none;padding:0;margin:0}ul.legend li{margin:3px 0}
.sw{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
ol.misses{padding-left:20px;margin:0}ol.misses li{margin:4px 0;cursor:pointer}
.why{color:#d62728}.stats,.help{color:#555}
#find{width:100%;margin-top:6px;box-sizing:border-box}
.e{fill:none;stroke:#8a8f98;stroke-width:1;marker-end:url(#arr)}
.hdr{cursor:pointer}.hdr rect{fill:#e8ebf0}.hdr text{font-weight:bold;fill:#333}
.n rect{fill:#fff;stroke:#9aa0a8}.n .t{fill:#777}
.n.io rect{fill:#eef0f3}
.fusion .hull{fill:var(--c);fill-opacity:.16;stroke:var(--c);stroke-width:1.5}
.n.fused rect{fill:var(--c);fill-opacity:.28;stroke:var(--c)}
.n.nm rect{stroke:#d62728;stroke-width:2;stroke-dasharray:4 2}
.misshull{fill:#d62728;fill-opacity:.07;stroke:#d62728;stroke-dasharray:5 3}
.badge{fill:#d62728}.bang{fill:#fff;font-weight:bold;text-anchor:middle}
.chip.miss{fill:#d62728}
.blk .strip{display:none}.blk.shut .strip{display:inline}.blk.shut .body{display:none}
.n.hit rect{stroke:#000;stroke-width:3}
"""

JS = """
(function(){
var D=JSON.parse(document.getElementById('map-data').textContent);
var svg=document.getElementById('map');
var blocks=[].slice.call(document.querySelectorAll('#map .blk'));
function relayout(){
  var y=D.pad;
  blocks.forEach(function(g,b){
    var B=D.blocks[b];B[0]=y;
    g.setAttribute('transform','translate(0,'+y+')');
    y+=B[1]+(B[4]?B[2]:B[3])+D.gap;
  });
  svg.setAttribute('height',y+D.pad);
  svg.setAttribute('viewBox','0 0 '+svg.getAttribute('width')+' '+(y+D.pad));
  var paths=document.querySelectorAll('#xedges path');
  for(var k=0;k<paths.length;k++){
    var p=paths[k],s=D.pos[p.getAttribute('data-s')],d=D.pos[p.getAttribute('data-d')];
    var bs=D.blocks[s[0]],bd=D.blocks[d[0]];
    var sx=bs[4]?s[1]:D.pad,sy=bs[4]?bs[0]+bs[1]+s[2]:bs[0]+bs[1]-D.nodeH;
    var tx=bd[4]?d[1]:D.pad,ty=bd[4]?bd[0]+bd[1]+d[2]:bd[0];
    p.setAttribute('d',route(sx,sy,tx,ty));
    p.style.display=(bs[4]||bd[4])?'':'none';
  }
}
function route(sx,sy,tx,ty){
  var W=D.nodeW,H=D.nodeH,hw=W/2,hh=H/2,P=function(a){return a.join(' ');};
  if(ty-sy<=D.rowH){var x1=sx+hw,y1=sy+H,x2=tx+hw,y2=ty,dy=Math.max((y2-y1)/2,6);
    return 'M'+P([x1,y1])+'C'+P([x1,y1+dy,x2,y2-dy,x2,y2]);}
  if(sx===tx){var x=sx+W,b=D.bracket;
    return 'M'+P([x,sy+hh])+'C'+P([x+b,sy+hh,x+b,ty+hh,x,ty+hh]);}
  if(tx<sx){var a=sx+hw,c=ty+hh;
    return 'M'+P([a,sy+H])+'C'+P([a,c,a,c,tx+W,c]);}
  var e=tx+hw,f=sy+hh;
  return 'M'+P([sx+W,f])+'C'+P([e,f,e,f,e,ty]);
}
function setOpen(b,open){
  D.blocks[b][4]=open?1:0;
  blocks[b].classList.toggle('shut',!open);
  blocks[b].querySelector('.tw').textContent=open?'\\u25be':'\\u25b8';
}
function show(el,b){
  setOpen(b,true);relayout();
  el.scrollIntoView({block:'center',inline:'center'});
  var n=el.classList.contains('n')?[el]:[].slice.call(el.querySelectorAll('.n'));
  n.forEach(function(x){x.classList.add('hit');});
  setTimeout(function(){n.forEach(function(x){x.classList.remove('hit');});},1500);
}
svg.addEventListener('click',function(ev){
  var h=ev.target.closest('.hdr');if(!h)return;
  var b=+h.getAttribute('data-block');setOpen(b,!D.blocks[b][4]);relayout();
});
document.getElementById('open-all').onclick=function(){blocks.forEach(function(g,b){setOpen(b,true);});relayout();};
document.getElementById('shut-all').onclick=function(){blocks.forEach(function(g,b){setOpen(b,false);});relayout();};
[].forEach.call(document.querySelectorAll('ol.misses li'),function(li){
  li.onclick=function(){show(document.getElementById('m'+li.getAttribute('data-miss')),+li.getAttribute('data-block'));};
});
var last=-1;
document.getElementById('find').addEventListener('keydown',function(ev){
  if(ev.key!=='Enter')return;
  var q=this.value.trim();if(!q)return;
  var all=document.querySelectorAll('#map .n');
  for(var k=1;k<=all.length;k++){
    var el=all[(last+k)%all.length];
    if(el.getAttribute('data-name').indexOf(q)>=0){
      last=(last+k)%all.length;show(el,+el.closest('.blk').getAttribute('data-block'));return;
    }
  }
});
function fromHash(){
  var q=decodeURIComponent(location.hash.slice(1));if(!q)return;
  var el=[].filter.call(document.querySelectorAll('#map .n'),function(n){
    return n.getAttribute('data-name')===q;})[0];
  if(el)show(el,+el.closest('.blk').getAttribute('data-block'));
}
window.addEventListener('hashchange',fromHash);
fromHash();
document.body.setAttribute('data-ready','1');
})();
"""
